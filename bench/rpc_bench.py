"""Synchronous RPC benchmark: each critical call at 1 and 16 in flight, beside a bare echo server.

The five services run as their own processes (as `make run` starts them) against real servers;
the baseline is a bare grpc.aio server that echoes bytes, measured in the same run with the same
load generator and request size. At each concurrency the echo server and the five RPCs are
measured in rounds, alternated (`events_bench.alternated`): a figure pools its rounds' calls, and
each round's ratio compares a call with the echo server's of the same round. Search runs over a
catalogue of `search_products` products; successive searches ask for its first eight pages in
turn, and successive nearby searches for eight places in turn.

Run: `python -m bench.rpc_bench [--quick]`; results go to bench/results/<timestamp>/.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import grpc

from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from a4co.geo.v1 import geo_service_pb2 as geo_pb
from a4co.geo.v1 import geo_service_pb2_grpc as geo_grpc
from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import lat_lng_pb2
from bench.events_bench import alternated, by_round, percentile, ratios
from bench.harness import cpu_seconds, listening_pid, rss_mb, run_benchmark, server_pids, sign_up
from services.demo.catalogue import ARTISANS, TEMPLATES
from services.platform.auth import generate_keypair
from services.platform.local_servers import ServerUrls, wait_until

SERVICES = ("identity", "inventory", "payments", "catalog", "geo")
SEARCH_QUERY = "aceite oliva virgen"
# The calls in flight together ask for different pages of the search and different places: a
# service that makes the round trips of the calls waiting together as one (decision 28) shares
# only the round trip then, as with real traffic, instead of reading one answer for all.
SEARCH_PAGES = 8
NEARBY_PLACES = 8
INDEX_CATCH_UP_S = 120.0
ECHO_METHOD = "/bench.Echo/Echo"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work the benchmark does."""

    calls: int  # of each RPC at each concurrency, shared among the rounds
    search_products: int
    rounds: int

    @property
    def per_round(self) -> int:
        """The calls of each RPC in one round."""
        return max(1, self.calls // self.rounds)


FULL = Sizes(calls=3000, search_products=100_000, rounds=3)
QUICK = Sizes(calls=600, search_products=10_000, rounds=2)
SMOKE = Sizes(calls=40, search_products=300, rounds=2)


def steps(sizes: Sizes) -> int:
    """How many steps `measure` reports: the seeding, the index catching up, then at each
    concurrency every round of the echo server and of the five RPCs."""
    return 2 + 2 * sizes.rounds * (1 + len(SERVED_BY))


@dataclass
class Result:
    """One RPC at one concurrency."""

    rpc: str
    in_flight: int
    p50_ms: float
    p99_ms: float
    rps: float
    baseline_p50_ms: float
    baseline_p99_ms: float
    baseline_rps: float
    # CPU per call (µs) of the load generator, the service, and the servers it used; the same for
    # the echo server's calls at this concurrency.
    cpu_us: dict[str, float] = field(default_factory=dict)
    baseline_cpu_us: dict[str, float] = field(default_factory=dict)
    # The rate of each round, and the echo server's in the same round.
    rps_rounds: list[float] = field(default_factory=list)
    baseline_rps_rounds: list[float] = field(default_factory=list)

    @property
    def rps_ratio(self) -> float:
        """Throughput relative to the bare echo server."""
        return self.rps / self.baseline_rps if self.baseline_rps else float("nan")

    @property
    def round_ratios(self) -> list[float]:
        """Throughput relative to the echo server in each round."""
        return ratios(self.rps_rounds, self.baseline_rps_rounds)


@dataclass
class Rounds:
    """One load's rounds, pooled: their latencies, their calls over their time, their CPU."""

    processes: dict[str, int]
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    seconds: float = 0.0
    _cpu_s: dict[str, float] = field(default_factory=dict)
    _calls: int = 0  # warm-up included, as the CPU is

    async def run(self, call: Callable[[], Awaitable[object]], total: int, in_flight: int) -> None:
        """One more round of `total` calls (see `load`)."""
        before = cpu_seconds(self.processes)
        latencies, rps = await load(call, total, in_flight)
        after = cpu_seconds(self.processes)
        self.latencies += latencies
        self.rates.append(rps)
        self.seconds += len(latencies) / rps
        for name in self.processes:
            self._cpu_s[name] = self._cpu_s.get(name, 0.0) + after[name] - before[name]
        self._calls += len(latencies) + WARM_UP

    @property
    def rps(self) -> float:
        """The rounds' calls over their summed time."""
        return len(self.latencies) / self.seconds

    @property
    def cpu_us(self) -> dict[str, float]:
        """CPU per call (µs) of each process over the rounds."""
        return {name: s * 1e6 / self._calls for name, s in self._cpu_s.items()}


@dataclass
class RpcRun:
    """Every RPC at both concurrencies, and each service's memory after the last of them (the
    catalog then holding the whole searched catalogue)."""

    results: list[Result]
    rss_mb: dict[str, float]


WARM_UP = 20
# The process that answers each measured call.
SERVED_BY = {
    "CheckStock (stock)": "inventory",
    "ValidatePaymentMethod (payment)": "payments",
    "SearchProducts (search)": "catalog",
    "ValidateToken (auth)": "identity",
    "FindNearbyArtisans (geo)": "geo",
}


async def load(
    call: Callable[[], Awaitable[object]], total: int, in_flight: int, budget_s: float = 20.0
) -> tuple[list[float], float]:
    """Run up to `total` calls with `in_flight` at a time, stopping after `budget_s` seconds so that
    a slow RPC cannot stretch the run; latencies in ms and the achieved rate."""
    latencies: list[float] = []
    remaining = total
    deadline = time.perf_counter() + budget_s

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    for _ in range(min(WARM_UP, total)):  # warm up connections and caches
        await call()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies, len(latencies) / (time.perf_counter() - started)


ECHO_SERVER = """
import asyncio, grpc, sys
async def main():
    server = grpc.aio.server()
    async def echo(request, context):
        return request
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[str]:
    """A bare grpc.aio server, in its own process, that returns what it gets."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ECHO_SERVER, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    port = int((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


@contextlib.asynccontextmanager
async def services(urls: ServerUrls, work: Path) -> AsyncIterator[tuple[dict[str, str], str, dict[str, int]]]:
    """The five services as processes under one prefix; yields their gRPC addresses, the prefix and
    their process ids."""
    prefix = "b" + uuid.uuid4().hex[:10]
    private, public = generate_keypair()
    (work / "jwt.key").write_text(private)
    (work / "jwt.pub").write_text(public)
    env = dict(
        os.environ,
        **urls.as_env(),
        A4CO_PREFIX=prefix,
        A4CO_JWT_PRIVATE_KEY_FILE=str(work / "jwt.key"),
        A4CO_JWT_PUBLIC_KEY_FILE=str(work / "jwt.pub"),
    )
    procs = {}
    for name in SERVICES:
        ready = work / f"{name}.ready.json"
        procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"services.{name}", "--ready-file", str(ready), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=(work / f"{name}.log").open("w"),
        )  # fmt: skip
    try:
        for name in SERVICES:
            ready = work / f"{name}.ready.json"
            await asyncio.to_thread(wait_until, ready.exists, f"{name} ready", 60)
        yield (
            {name: json.loads((work / f"{name}.ready.json").read_text())["grpc"] for name in SERVICES},
            prefix,
            {name: proc.pid for name, proc in procs.items()},
        )
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            await proc.wait()


async def seed(urls: ServerUrls, prefix: str, products: int) -> None:
    """Stock, workshops and a catalogue of `products` products, written straight to the schemas."""
    conn = await asyncpg.connect(urls.database_url)
    try:
        await conn.executemany(
            f'INSERT INTO "{prefix}_inventory".stock (product_id, artisan_id, on_hand, low_stock_threshold)'
            " VALUES ($1, 'a-1', 100, 3) ON CONFLICT DO NOTHING",
            [(f"p-{i}",) for i in range(1000)],
        )
        await conn.executemany(
            f'INSERT INTO "{prefix}_geo".workshops (artisan_id, display_name, craft, locality, latitude, longitude)'
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            [(a.key, a.name, a.craft, a.town, a.latitude, a.longitude) for a in ARTISANS],
        )
        await conn.executemany(
            f'INSERT INTO "{prefix}_catalog".artisans (artisan_id, display_name, locality, latitude, longitude)'
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [(a.key, a.name, a.town, a.latitude, a.longitude) for a in ARTISANS],
        )
        templates = [(craft, t) for craft, ts in TEMPLATES.items() for t in ts]
        batch = 5000
        for start in range(0, products, batch):
            rows = []
            for i in range(start, min(products, start + batch)):
                craft, (name, description, price) = templates[i % len(templates)]
                artisan = next(a for a in ARTISANS if a.craft == craft)
                rows.append(
                    (f"c-{i}", artisan.key, name.format(v=f"lote {i}").strip(), description, craft, price)
                )
            await conn.executemany(
                f'INSERT INTO "{prefix}_catalog".products (product_id, artisan_id, name, description, category,'
                " price_cents, currency_code, publish_time, name_norm, search) VALUES ($1, $2, $3, $4, $5, $6, 'EUR',"
                " now(), lower(public.unaccent($3)),"
                " setweight(to_tsvector('spanish', public.unaccent($3)), 'A')"
                " || setweight(to_tsvector('spanish', public.unaccent($5)), 'B')"
                " || setweight(to_tsvector('spanish', public.unaccent($4)), 'C')) ON CONFLICT DO NOTHING",
                rows,
            )
        await conn.execute(
            f'INSERT INTO "{prefix}_catalog".lexicon (word) SELECT DISTINCT w FROM "{prefix}_catalog".products,'
            " regexp_split_to_table(name_norm, '[^a-z0-9]+') AS w WHERE length(w) >= 4 AND w ~ '^[a-z]+$' ON CONFLICT DO NOTHING"
        )
        await conn.execute(f'ANALYZE "{prefix}_catalog".products')
    finally:
        await conn.close()


async def measure(urls: ServerUrls, sizes: Sizes, progress: Callable[[str], None] = print) -> RpcRun:
    """Start everything, seed, and measure each RPC beside the echo baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        async with services(urls, Path(tmp)) as (addresses, prefix, pids), echo_server() as echo_address:
            progress(f"seeding {sizes.search_products:,} products")
            await seed(urls, prefix, sizes.search_products)
            progress("waiting for the search index to follow the seeding")
            await wait_for_search_index(urls, prefix, addresses["catalog"])
            calls = await prepare_calls(addresses)
            channel = grpc.aio.insecure_channel(echo_address)
            echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
            payload = CHECK.SerializeToString()
            # Every process named, so that none counts as the load generator's child.
            processes = server_pids(urls) | pids | {"load generator": os.getpid()}
            echo_pid = listening_pid(int(echo_address.rsplit(":", 1)[1]))
            if echo_pid is not None:
                processes["echo server"] = echo_pid
            results = []
            for in_flight in (1, 16):
                loads = {"echo": lambda: echo(payload), **calls}
                measured = {name: Rounds(processes) for name in loads}
                for r, name in alternated(sizes.rounds, list(loads)):
                    label = "baseline echo" if name == "echo" else name
                    progress(f"{label} at {in_flight} in flight (round {r + 1} of {sizes.rounds})")
                    await measured[name].run(loads[name], sizes.per_round, in_flight)
                base = measured["echo"]
                for name in calls:
                    m = measured[name]
                    results.append(
                        Result(
                            name,
                            in_flight,
                            percentile(m.latencies, 50),
                            percentile(m.latencies, 99),
                            m.rps,
                            percentile(base.latencies, 50),
                            percentile(base.latencies, 99),
                            base.rps,
                            m.cpu_us,
                            base.cpu_us,
                            m.rates,
                            base.rates,
                        )
                    )
            await channel.close()
            return RpcRun(results, {name: rss_mb(pid) for name, pid in pids.items()})


CHECK = inventory_pb.CheckStockRequest(
    lines=[inventory_pb.StockRequestLine(product_id=f"p-{i}", quantity=2) for i in (1, 2, 3)]
)


async def wait_for_search_index(urls: ServerUrls, prefix: str, address: str) -> None:
    """Until SearchProducts counts every match the seeded catalogue has: the catalog's search index
    follows the seeding through PostgreSQL's notifications, and is measured only once complete."""
    conn = await asyncpg.connect(urls.database_url)
    try:
        expected = await conn.fetchval(
            f"SELECT count(*) FROM \"{prefix}_catalog\".products WHERE search @@ plainto_tsquery('spanish', $1)",
            SEARCH_QUERY,
        )
    finally:
        await conn.close()
    async with grpc.aio.insecure_channel(address) as channel:
        catalog = catalog_grpc.CatalogServiceStub(channel)
        request = catalog_pb.SearchProductsRequest(query=SEARCH_QUERY, page_size=1)
        deadline = time.monotonic() + INDEX_CATCH_UP_S
        while (found := (await catalog.SearchProducts(request)).total_size) != expected:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the search index counts {found} of {expected} matches after {INDEX_CATCH_UP_S:.0f} s"
                )
            await asyncio.sleep(0.2)


async def prepare_calls(addresses: dict[str, str]) -> dict[str, Callable[[], Awaitable[object]]]:
    """One callable per measured RPC, with a customer signed up for the authenticated ones."""
    channels = {name: grpc.aio.insecure_channel(address) for name, address in addresses.items()}
    identity = identity_grpc.IdentityServiceStub(channels["identity"])
    token = await sign_up(identity, identity_pb.ROLE_CUSTOMER)
    auth = (("authorization", f"Bearer {token}"),)
    inventory = inventory_grpc.InventoryServiceStub(channels["inventory"])
    payments = payments_grpc.PaymentsServiceStub(channels["payments"])
    catalog = catalog_grpc.CatalogServiceStub(channels["catalog"])
    geo = geo_grpc.GeoServiceStub(channels["geo"])
    card = payments_pb.ValidatePaymentMethodRequest(
        card=payments_pb.Card(number="4242424242424242", exp_month=12, exp_year=2031, cvc="123")
    )
    searches = itertools.cycle(await search_pages(catalog, SEARCH_PAGES)).__next__
    nearby = itertools.cycle(
        [
            geo_pb.FindNearbyArtisansRequest(
                location=lat_lng_pb2.LatLng(latitude=38.0133 - 0.02 * i, longitude=-3.3706 + 0.03 * i),
                radius_km=30,
            )
            for i in range(NEARBY_PLACES)
        ]
    ).__next__
    validate = identity_pb.ValidateTokenRequest(access_token=token)
    return {
        "CheckStock (stock)": lambda: inventory.CheckStock(CHECK),
        "ValidatePaymentMethod (payment)": lambda: payments.ValidatePaymentMethod(card, metadata=auth),
        "SearchProducts (search)": lambda: catalog.SearchProducts(searches()),
        "ValidateToken (auth)": lambda: identity.ValidateToken(validate),
        "FindNearbyArtisans (geo)": lambda: geo.FindNearbyArtisans(nearby()),
    }


async def search_pages(
    catalog: catalog_grpc.CatalogServiceAsyncStub, pages: int
) -> list[catalog_pb.SearchProductsRequest]:
    """The requests of the search's first `pages` pages of 20 (fewer if it has fewer)."""
    requests = [catalog_pb.SearchProductsRequest(query=SEARCH_QUERY, page_size=20)]
    while len(requests) < pages:
        token = (await catalog.SearchProducts(requests[-1])).next_page_token
        if not token:
            break
        requests.append(catalog_pb.SearchProductsRequest(query=SEARCH_QUERY, page_size=20, page_token=token))
    return requests


def report(run: RpcRun) -> str:
    """Markdown tables of the calls, of their CPU and of the services' memory."""
    lines = [calls_table(run.results), "", cpu_table(run.results), ""]
    lines += ["| service | MB after the RPCs |", "|---|---|"]
    lines += [f"| {name} | {mb:.1f} |" for name, mb in sorted(run.rss_mb.items())]
    return "\n".join(lines)


def calls_table(results: list[Result]) -> str:
    """A Markdown table of the calls beside the echo server."""
    lines = [
        "| RPC | in flight | p50 ms | p99 ms | rps | echo p50 ms | echo p99 ms | echo rps | rps ratio"
        " | ratio by round |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.rpc} | {r.in_flight} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.rps:,.0f} | {r.baseline_p50_ms:.2f}"
            f" | {r.baseline_p99_ms:.2f} | {r.baseline_rps:,.0f} | {r.rps_ratio:.2f} | {by_round(r.round_ratios)} |"
        )
    return "\n".join(lines)


def cpu_table(results: list[Result], in_flight: int = 16) -> str:
    """A Markdown table of the CPU each call cost at `in_flight`, beside the echo server's."""
    lines = [
        f"CPU per call at {in_flight} in flight (µs), from /proc:",
        "",
        "| RPC | load generator | service | PostgreSQL | Redis | NATS | echo: load generator | echo server |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.in_flight != in_flight:
            continue
        cells = [
            r.cpu_us.get(k)
            for k in ("load generator", SERVED_BY.get(r.rpc, ""), "PostgreSQL", "Redis", "NATS")
        ]
        cells += [r.baseline_cpu_us.get(k) for k in ("load generator", "echo server")]
        lines.append(f"| {r.rpc} | " + " | ".join("-" if c is None else f"{c:,.0f}" for c in cells) + " |")
    return "\n".join(lines)


def to_json(run: RpcRun) -> dict[str, object]:
    """The results and the memory, as JSON."""
    return {"calls": [asdict(r) | {"rps_ratio": r.rps_ratio} for r in run.results], "rss_mb": run.rss_mb}


def main() -> None:
    """Start servers (or use A4CO_*_URL), measure, print and save the results."""
    run_benchmark(
        __doc__ or "",
        "rpc",
        (FULL, QUICK),
        measure,
        steps,
        report,
        to_json,
    )


if __name__ == "__main__":
    main()
