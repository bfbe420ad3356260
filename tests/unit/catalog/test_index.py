"""The catalog's search index on its own: matching, ranking, filters, pages and updates."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.catalog.adapters import index as index_module
from services.catalog.adapters.index import (
    IndexedProduct,
    ProductIndex,
    TooManyPlacesError,
    distance_km,
    remove_abandoned,
)
from services.catalog.domain import SearchFilters

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JAEN = (37.7796, -3.7849)


def product(
    pid: str, name: str, description: str = "", category: str = "aceite", **kw: object
) -> IndexedProduct:
    fields: dict[str, object] = {
        "artisan_id": "a-1",
        "price_cents": 1000,
        "publish_time": T0,
        "in_stock": True,
        "latitude": JAEN[0],
        "longitude": JAEN[1],
    }
    fields.update(kw)
    return IndexedProduct(pid, name=name, description=description, category=category, **fields)  # type: ignore[arg-type]


def loaded(*products: IndexedProduct) -> ProductIndex:
    index = ProductIndex()
    loading = index.loading()
    loading.add(products)
    loading.finish()
    return index


def ids(index: ProductIndex, *words: str, any_word: bool = False, **filters: object) -> list[str]:
    found, total = index.search(list(words), any_word, SearchFilters(**filters), 0, 100)  # type: ignore[arg-type]
    assert total == len(found)
    return [r.product_id for r in found]


def test_words_match_whatever_their_accents_and_plural() -> None:
    index = loaded(
        product("p1", "Aceite de oliva virgen extra"),
        product("p2", "Plato de cerámica verde", category="ceramica"),
        product("p3", "Miel de romero", category="miel"),
    )
    assert ids(index, "aceites", "olivas") == ["p1"]
    assert ids(index, "ceramica") == ["p2"]
    assert ids(index, "aceite", "romero") == []  # every word, by default
    assert set(ids(index, "aceite", "romero", any_word=True)) == {"p1", "p3"}
    assert ids(index, "de") == []  # stop words alone find nothing
    assert index.documents == 3


def test_a_name_outranks_a_category_which_outranks_a_description() -> None:
    index = loaded(
        product("desc", "Vela artesanal", description="Hecha con cera de miel", category="velas"),
        product("cat", "Tarro de romero", category="miel"),
        product("name", "Miel de azahar", category="tarros"),
    )
    assert ids(index, "miel") == ["name", "cat", "desc"]


def test_filters_narrow_and_the_radius_is_exact() -> None:
    # One degree of longitude at Jaén's latitude is 88 km: the box around a 10 km circle takes both
    # of the last two; only the distance tells the corner one apart.
    lat, lng = JAEN
    index = loaded(
        product("cheap", "Aceite suave", price_cents=500),
        product("dear", "Aceite premium", price_cents=5000, artisan_id="a-2"),
        product("gone", "Aceite agotado", in_stock=False),
        product("queso", "Queso de aceite", category="queso"),
        product("edge", "Aceite lejano", latitude=lat + 0.08, longitude=lng),
        product("corner", "Aceite esquina", latitude=lat + 0.085, longitude=lng + 0.105),
    )
    assert set(ids(index, "aceite", max_price_cents=1000)) == {"cheap", "gone", "queso", "edge", "corner"}
    assert ids(index, "aceite", min_price_cents=1001) == ["dear"]
    assert ids(index, "aceite", artisan_id="a-2") == ["dear"]
    assert "gone" not in ids(index, "aceite", in_stock_only=True)
    assert ids(index, "aceite", category="queso") == ["queso"]
    assert distance_km(lat + 0.085, lng + 0.105, lat, lng) > 10 > distance_km(lat + 0.08, lng, lat, lng)
    near = index.search(["aceite"], False, SearchFilters(near=JAEN, radius_km=10), 0, 100)
    assert "edge" in {r.product_id for r in near[0]}
    assert "corner" not in {r.product_id for r in near[0]}
    assert near[1] == len(near[0]) == 5
    assert all(r.distance_km <= 10 for r in near[0])


def test_pages_of_equal_scores_cover_every_result_once() -> None:
    twins = [
        product(f"p{i:02}", "Aceite de oliva", publish_time=T0 + timedelta(minutes=i % 7)) for i in range(60)
    ]
    index = loaded(*twins[:50])
    index.update(twins[50:], [p.product_id for p in twins[50:]])  # a second segment
    seen: list[str] = []
    for offset in range(0, 60, 7):
        page, total = index.search(["aceite"], False, SearchFilters(), offset, 7)
        assert total == 60
        seen += [r.product_id for r in page]
    assert sorted(seen) == sorted(p.product_id for p in twins)
    # Near a point that takes them all (the twins share one workshop's), the same pages in order.
    seen_near: list[str] = []
    for offset in range(0, 60, 7):
        page, total = index.search(["aceite"], False, SearchFilters(near=JAEN, radius_km=50), offset, 7)
        assert total == 60
        seen_near += [r.product_id for r in page]
    assert seen_near == seen
    by_id = {p.product_id: p for p in twins}
    loaded_first = [by_id[s].publish_time for s in seen if s < "p50"]
    assert loaded_first == sorted(loaded_first, reverse=True)  # newest first, as loaded
    assert seen[-10:] == [s for s in seen if s >= "p50"]  # changed since: after the others


def test_updates_replace_add_and_remove_documents() -> None:
    original = product("p1", "Aceite de oliva")
    index = loaded(original, product("p2", "Miel de romero", category="miel"))
    index.update([replace(original, name="Queso curado", category="queso")], ["p1"])
    assert ids(index, "aceite") == []
    assert ids(index, "queso") == ["p1"]
    index.update([product("p3", "Aceite nuevo")], ["p3", "p2"])
    assert ids(index, "aceite") == ["p3"]
    assert ids(index, "miel") == []
    assert index.documents == 2


@pytest.mark.parametrize("offset", [0, 3, 10])
def test_a_page_past_the_end_is_empty_but_counts(offset: int) -> None:
    index = loaded(*(product(f"p{i}", "Aceite") for i in range(3)))
    page, total = index.search(["aceite"], False, SearchFilters(), offset, 5)
    assert total == 3
    assert len(page) == max(0, 3 - offset)


def test_any_word_still_obeys_the_filters() -> None:
    index = loaded(
        product("p1", "Aceite de oliva", category="aceite"),
        product("p2", "Miel de romero", category="miel"),
        product("p3", "Queso curado", category="queso"),
    )
    assert set(ids(index, "aceite", "miel", any_word=True)) == {"p1", "p2"}
    assert ids(index, "aceite", "miel", any_word=True, category="miel") == ["p2"]


def browsed(index: ProductIndex, **filters: object) -> list[str]:
    found, total = index.browse(SearchFilters(**filters), 0, 100)  # type: ignore[arg-type]
    assert total == len(found)
    return [r.product_id for r in found]


# Three workshops east of Jaén, 10, 20 and 30 km away (0.1 degree of longitude is 8.8 km there).
PLACES = {f"w{k}": (JAEN[0], JAEN[1] + 0.1 * k * 10 / 8.8) for k in (1, 2, 3)}


def spread() -> list[IndexedProduct]:
    """Twelve products, four at each workshop, published one minute apart in a shuffled order."""
    made = []
    for i, minute in enumerate([5, 11, 0, 7, 2, 9, 4, 10, 1, 6, 3, 8]):
        workshop = f"w{i % 3 + 1}"
        lat, lng = PLACES[workshop]
        made.append(
            product(
                f"p{i:02}",
                "Aceite de oliva" if i % 2 else "Queso curado",
                category="aceite" if i % 2 else "queso",
                artisan_id=workshop,
                publish_time=T0 + timedelta(minutes=minute),
                latitude=lat,
                longitude=lng,
                price_cents=100 * (i + 1),
                in_stock=i % 4 != 0,
            )
        )
    return made


def test_without_words_the_newest_come_first_and_the_filters_narrow() -> None:
    products = spread()
    index = loaded(*products[:8])
    index.update(products[8:], [p.product_id for p in products[8:]])  # a second segment, out of order
    newest = [p.product_id for p in sorted(products, key=lambda p: p.publish_time, reverse=True)]
    assert browsed(index) == newest
    assert browsed(index, category="queso") == [i for i in newest if int(i[1:]) % 2 == 0]
    assert browsed(index, artisan_id="w2") == [i for i in newest if int(i[1:]) % 3 == 1]
    assert browsed(index, max_price_cents=400) == [i for i in newest if int(i[1:]) < 4]
    assert browsed(index, in_stock_only=True) == [i for i in newest if int(i[1:]) % 4 != 0]
    pages = [index.browse(SearchFilters(), offset, 5) for offset in (0, 5, 10, 15)]
    assert [total for _, total in pages] == [12] * 4
    assert [r.product_id for page, _ in pages for r in page] == newest
    assert all(r.score == 0 and r.distance_km == 0 for page, _ in pages for r in page)


def test_without_words_near_a_point_the_nearest_come_first_then_the_newest() -> None:
    products = spread()
    index = loaded(*products)
    by_time = sorted(products, key=lambda p: p.publish_time, reverse=True)
    expected = [p.product_id for w in ("w1", "w2", "w3") for p in by_time if p.artisan_id == w]
    km = {w: distance_km(*PLACES[w], *JAEN) for w in PLACES}
    assert [round(km[w]) for w in ("w1", "w2", "w3")] == [10, 20, 30]
    assert browsed(index, near=JAEN, radius_km=50) == expected
    assert browsed(index, near=JAEN, radius_km=25) == expected[:8]  # the radius is exact
    assert browsed(index, near=JAEN, radius_km=5) == []
    assert browsed(index, near=JAEN, radius_km=50, category="aceite") == [
        i for i in expected if int(i[1:]) % 2
    ]
    # Pages that start and end within a place, or span two: every result once, in order.
    for size in (1, 3, 5, 12):
        seen = []
        for offset in range(0, 14, size):
            page, total = index.browse(SearchFilters(near=JAEN, radius_km=50), offset, size)
            assert total == 12
            seen += [(r.product_id, r.distance_km) for r in page]
        assert [i for i, _ in seen] == expected
        workshop = {p.product_id: p.artisan_id for p in products}
        assert all(d == km[workshop[i]] for i, d in seen)


def test_with_words_near_a_point_the_best_come_first_within_the_radius() -> None:
    index = loaded(*spread())
    found, total = index.search(["aceite"], False, SearchFilters(near=JAEN, radius_km=25), 0, 100)
    assert total == len(found) == 4  # the oil of w1 and w2; w3's is 30 km away
    workshop = {p.product_id: p.artisan_id for p in spread()}
    assert {workshop[r.product_id] for r in found} == {"w1", "w2"}
    assert all(r.distance_km == distance_km(*PLACES[workshop[r.product_id]], *JAEN) for r in found)
    assert index.search(["aceite"], False, SearchFilters(near=JAEN, radius_km=5), 0, 10) == ([], 0)


def test_near_a_point_with_more_places_than_it_counts_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    index = loaded(*spread())
    monkeypatch.setattr(index_module, "MAX_PLACES", 2)
    with pytest.raises(TooManyPlacesError):
        index.browse(SearchFilters(near=JAEN, radius_km=50), 0, 10)
    with pytest.raises(TooManyPlacesError):
        index.search(["aceite"], False, SearchFilters(near=JAEN, radius_km=50), 0, 10)
    assert len(browsed(index, near=JAEN, radius_km=15)) == 4  # the box around 15 km holds one place


def test_it_knows_the_words_some_product_has() -> None:
    index = loaded(product("p1", "Aceitunas aliñadas", category="aceite"))
    assert index.knows("aceituna")  # the same stem
    assert index.knows("de")  # a stop word needs no correcting
    assert not index.knows("olivia")


def test_what_it_knows_follows_every_change_of_the_index() -> None:
    index = loaded(product("p1", "Aceite de oliva"))
    assert not index.knows("romero")  # remembered until the index changes
    index.update([product("p2", "Miel de romero", category="miel")], ["p2"])
    assert index.knows("romero")
    index.update([], ["p1"])  # p1 removed: its words with it
    assert not index.knows("oliva")
    index.rest()
    assert index.knows("romero")
    reloaded = index.loading()
    reloaded.add([product("p3", "Queso curado", category="queso")])
    reloaded.finish()  # a whole new index
    assert not index.knows("romero")
    assert index.knows("queso")


def indexes(index: ProductIndex) -> list[Path]:
    return [p for p in index.directory.iterdir() if p.is_dir()]


def test_its_files_live_in_its_own_directory_until_it_is_closed(tmp_path: Path) -> None:
    index = ProductIndex(parent=tmp_path)
    first = index.loading()
    first.add([product("p1", "Aceite de oliva")])
    first.finish()
    [directory] = tmp_path.iterdir()
    assert directory == index.directory
    [kept] = indexes(index)  # the empty index it started with is gone
    assert any(f.suffix == ".idx" for f in kept.iterdir())
    index.update([product("p2", "Miel de romero")], ["p2"])  # merges may run in the background
    second = index.loading()
    second.add([product("p3", "Plato de cerámica")])
    second.finish()
    [now] = indexes(index)  # a reload replaces it
    assert now != kept
    assert ids(index, "ceramica") == ["p3"]
    index.close()
    assert list(tmp_path.iterdir()) == []


def test_a_resting_index_lets_its_writer_go_and_takes_a_new_one_for_the_next_update() -> None:
    index = loaded(product("p1", "Aceite de oliva"))
    assert index.writing  # the load's writer, kept for the updates that follow
    for i in range(2, 12):  # enough segments for merges to start in the background
        index.update([product(f"p{i}", "Aceite de oliva")], [f"p{i}"])
    index.rest()
    assert not index.writing
    assert len(ids(index, "aceite")) == 11
    index.rest()  # nothing to let go
    index.update([product("p1", "Miel de romero", category="miel")], ["p1"])
    assert index.writing
    assert ids(index, "miel") == ["p1"]
    assert len(ids(index, "aceite")) == 10


def test_an_index_left_by_a_killed_process_is_removed_by_the_next_one(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path\n"
        "from services.catalog.adapters.index import ProductIndex\n"
        "index = ProductIndex(parent=Path(sys.argv[1])); print(index.directory, flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    killed = Path(child.stdout.readline().strip())
    alive = ProductIndex(parent=tmp_path)
    assert killed.exists()  # its process still holds it
    child.kill()
    child.wait(timeout=30)
    half_made = tmp_path / "a4co-search-new"  # no lock file yet: another process is making it
    half_made.mkdir()
    assert remove_abandoned(tmp_path) == [killed]
    assert sorted(tmp_path.iterdir()) == sorted([alive.directory, half_made])
    alive.close()
