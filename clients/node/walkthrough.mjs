// An order placed through a4co's gRPC APIs from Node.js, from a workshop's first product to the
// customer's points, printing one JSON line per step.
//
//   node clients/node/walkthrough.mjs [addresses.json]
//
// The addresses are those `make run` writes to .data/addresses.json (the default). TLS follows the
// A4CO_TLS_* variables, as for the services. The exit status is 0 when every step did what the
// contracts promise, 1 otherwise.

import { randomUUID } from "node:crypto";

import { addressesFrom, call, connect, grpc, metadata } from "./a4co.mjs";

const PASSWORD = "contraseña-segura-2026";
const SETTLE_MS = 30_000;

function say(step, fields) {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

/** Call `probe` until it answers something other than undefined, for at most `timeoutMs`. */
async function eventually(what, probe, timeoutMs = SETTLE_MS) {
  const deadline = Date.now() + timeoutMs;
  for (let pause = 20; ; pause = Math.min(pause * 2, 500)) {
    const answer = await probe();
    if (answer !== undefined) return answer;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

/** The error a call fails with, which must have the status `expected`. */
async function failure(promise, expected) {
  try {
    await promise;
  } catch (error) {
    if (error.code !== grpc.status[expected]) throw error;
    return error;
  }
  throw new Error(`the call was expected to fail with ${expected} and succeeded`);
}

async function signUp(a4co, role, email) {
  const answer = await call(a4co.identity, "Register", {
    email,
    password: PASSWORD,
    display_name: email.split("@")[0],
    role,
  });
  return { userId: answer.user.user_id, token: answer.tokens.access_token };
}

async function main() {
  const a4co = connect(addressesFrom(process.argv[2]));
  const tag = randomUUID().slice(0, 8);

  // A bad sign-up: INVALID_ARGUMENT naming every field that is wrong, not just the first.
  const refused = await failure(
    call(a4co.identity, "Register", { email: "no-es-un-correo", password: "corta", role: "ROLE_CUSTOMER" }),
    "INVALID_ARGUMENT",
  );
  say("invalid sign-up", {
    code: grpc.status[refused.code],
    reason: refused.details.reason,
    fields: (refused.details.fieldViolations ?? []).map((v) => v.field).sort(),
  });

  // A workshop of Úbeda and its first product, on sale once every service has heard of it.
  const artisan = await signUp(a4co, "ROLE_ARTISAN", `taller-${tag}@ubeda.es`);
  await call(
    a4co.artisans,
    "OnboardArtisan",
    {
      request_id: randomUUID(),
      display_name: `Alfarería ${tag}`,
      craft: "ceramica",
      locality: "Úbeda",
      location: { latitude: 38.0133, longitude: -3.3706 },
    },
    { token: artisan.token },
  );
  const name = `Fuente de cerámica verde ${tag}`;
  const published = await call(
    a4co.artisans,
    "PublishProduct",
    {
      request_id: randomUUID(),
      name,
      category: "ceramica",
      price: { currency_code: "EUR", amount_cents: "2450" },
      initial_stock: 3,
    },
    { token: artisan.token },
  );
  const productId = published.product.product_id;
  const found = await eventually("the product in a search", async () => {
    const page = await call(a4co.catalog, "SearchProducts", { query: tag, page_size: 5 });
    return page.results.map((r) => r.product).find((p) => p.product_id === productId);
  });
  await eventually("the product's stock in inventory", async () => {
    const stock = await call(a4co.inventory, "CheckStock", { lines: [{ product_id: productId, quantity: 1 }] });
    return stock.all_available ? stock : undefined;
  });
  say("product on sale", { product_id: productId, name: found.name, price_cents: found.price.amount_cents });

  // A customer with a card.
  const customer = await signUp(a4co, "ROLE_CUSTOMER", `cliente-${tag}@baeza.es`);
  const card = await call(
    a4co.payments,
    "ValidatePaymentMethod",
    { card: { number: "4242424242424242", exp_month: 12, exp_year: 2031, cvc: "123" } },
    { token: customer.token },
  );

  // The customer's notifications, streamed from now on while the order goes through the saga.
  const notes = [];
  const stream = a4co.notifications.WatchNotifications({}, metadata(customer.token));
  stream.on("data", (message) => notes.push(message.notification));
  const streamEnded = new Promise((resolve) => {
    stream.on("error", (error) => resolve(grpc.status[error.code]));
    stream.on("end", () => resolve("OK"));
  });

  const request = {
    request_id: randomUUID(),
    lines: [{ product_id: productId, quantity: 2 }],
    payment_method_id: card.payment_method_id,
    delivery_address: { street: "Calle Real 1", locality: "Baeza" },
    delivery_location: { latitude: 37.9938, longitude: -3.47 },
  };
  const placed = (await call(a4co.orders, "CreateOrder", request, { token: customer.token })).order;
  const again = (await call(a4co.orders, "CreateOrder", request, { token: customer.token })).order;
  say("order placed", {
    order_id: placed.order_id,
    status: placed.status,
    total_cents: placed.total.amount_cents,
    same_order_on_retry: again.order_id === placed.order_id,
  });

  const confirmed = await eventually("the order confirmed", async () => {
    const { order } = await call(a4co.orders, "GetOrder", { order_id: placed.order_id }, { token: customer.token });
    return order.status === "ORDER_STATUS_CONFIRMED" ? order : undefined;
  });
  // notifications follows ORDERS and PAYMENTS each in its own order: the payment's notification
  // may come after the confirmation's, so both are waited for.
  const told = await eventually("the customer told of the payment and the confirmation", async () => {
    const mine = notes.filter((n) => n.subject_id === placed.order_id);
    const confirmation = mine.find((n) => n.topic === "a4co.orders.OrderStatusChanged");
    return confirmation && mine.some((n) => n.topic === "a4co.payments.PaymentProcessed") ? confirmation : undefined;
  });
  stream.cancel();
  say("order confirmed", {
    status: confirmed.status,
    notifications: notes.filter((n) => n.subject_id === placed.order_id).map((n) => n.topic),
    told: told.title,
    stream_ended: await streamEnded,
  });

  // Only one unit is left: a second order of two is refused, with the reason in its details.
  const short = await failure(
    call(
      a4co.orders,
      "CreateOrder",
      { ...request, request_id: randomUUID() },
      { token: customer.token },
    ),
    "FAILED_PRECONDITION",
  );
  say("out of stock", {
    code: grpc.status[short.code],
    reason: short.details.reason,
    domain: short.details.domain,
  });

  // The points the payment earned, beside the welcome points.
  const balance = await eventually("the points of the payment", async () => {
    const answer = await call(a4co.loyalty, "GetBalance", {}, { token: customer.token });
    return answer.entry_count >= 2 ? answer : undefined;
  });
  say("points", { points: balance.points, entries: balance.entry_count });

  // A call that cannot be answered in time ends at its deadline.
  const late = await failure(
    call(a4co.catalog, "SearchProducts", { query: "aceite" }, { deadlineMs: 0 }),
    "DEADLINE_EXCEEDED",
  );
  say("deadline", { code: grpc.status[late.code] });

  for (const client of Object.values(a4co)) client.close();
}

main().catch((error) => {
  // A failed call carries its status details already (`call`); other errors have none.
  say("failed", { error: String(error.message ?? error), code: grpc.status[error.code], details: error.details });
  process.exitCode = 1;
});
