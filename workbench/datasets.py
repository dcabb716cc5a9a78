"""Deterministic generators of the bronze data: a retail OLTP schema and a clickstream.

Every table is a pure function of `(scale, seed)`. Big tables are made in chunks of `CHUNK_ROWS`
rows, each drawn from its own generator seeded by `[seed, stream, chunk]`, so the bytes never
depend on memory, on which tables were asked for, or on the order they were made in.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from workbench.errors import ParameterError

if TYPE_CHECKING:
    from workbench.lakehouse import Lakehouse

SIMULATED_NOW = datetime(2026, 11, 1, tzinfo=UTC)
"""The end of every data window: checks that need a "now" use this, never the wall clock."""
TABLES = ("customers", "products", "orders", "order_lines", "payments", "click_events")
MAX_SCALE = 10
CHUNK_ROWS = 100_000  # rows per seeded chunk: part of the dataset's definition, like the seed
LINES_PER_ORDER = 2.5  # mean of 1 + min(Poisson(1.5), 19)

_PER_SCALE = dict(customers=100_000, products=10_000, orders=1_000_000, click_events=10_000_000)
_MINIMUM = dict(customers=100, products=50, orders=200, click_events=2_000)

_US = 1_000_000
_HOUR, _DAY = 3600 * _US, 86_400 * _US
_NOW = int(SIMULATED_NOW.timestamp()) * _US
_ORDERS_TO = _NOW - _HOUR  # leaves room for payments, which come at most 30 minutes later
# Clicks: sessions start in one day that ends 6 h before now; a session lasts at most 3 h
# (36 events, gaps of at most 5 min) and a delivery delay is at most 3 h, so all is before now.
_CLICKS_TO = _NOW - 6 * _HOUR
_CLICKS_FROM = _CLICKS_TO - _DAY
_CUSTOMERS_FROM, _CUSTOMERS_TO = _NOW - 3 * 365 * _DAY, _CLICKS_FROM  # all sign up before clicking
_MAX_DELAY = 3 * _HOUR

_TS = pa.timestamp("us", tz="UTC")
_S, _I, _F = pa.string(), pa.int64(), pa.float64()
SCHEMAS = {
    "customers": pa.schema(
        dict(customer_id=_I, name=_S, email=_S, city=_S, country=_S, segment=_S,
             created_at=_TS, updated_at=_TS)),
    "products": pa.schema(
        dict(product_id=_I, name=_S, category=_S, subcategory=_S, brand=_S, price=_F,
             updated_at=_TS)),
    "orders": pa.schema(dict(order_id=_I, customer_id=_I, order_ts=_TS, status=_S, channel=_S)),
    "order_lines": pa.schema(
        dict(order_id=_I, line_no=pa.int32(), product_id=_I, quantity=pa.int32(),
             unit_price=_F, discount=_F)),
    "payments": pa.schema(
        dict(payment_id=_I, order_id=_I, paid_ts=_TS, amount=_F, method=_S, status=_S)),
    "click_events": pa.schema(
        dict(event_id=_I, session_id=_I, customer_id=_I, event_time=_TS, ingest_time=_TS,
             event_type=_S, page=_S, product_id=_I, value=_F)),
}  # fmt: skip

_FIRST = pa.array(
    "Ada Alan Amara Ana Arjun Ben Carla Chen Chloe David Elena Emma Fatima Felix Hana Hugo Ines "
    "Ivan Jack Julia Kenji Lars Laura Leo Lina Lucas Maria Mateo Mia Nadia Noah Olga Omar Paul "
    "Priya Rosa Sam Sara Tom Yara Yusuf Zoe".split())  # fmt: skip
_LAST = pa.array(
    "Adams Almeida Berg Brown Costa Dubois Fischer Garcia Hansen Ito Jensen Kim Kowalski Lee "
    "Lopez Martin Meyer Moreau Muller Nakamura Nguyen Novak Okafor Patel Rossi Schmidt Silva "
    "Smith Sousa Tanaka Taylor Wang Weber Wilson Yilmaz".split())  # fmt: skip
_DOMAINS = pa.array("gmail.com outlook.com yahoo.com proton.me icloud.com example.org".split())
_CITIES = [  # city, country, relative weight (bigger cities have more customers)
    ("London", "United Kingdom", 9), ("Manchester", "United Kingdom", 3),
    ("Paris", "France", 8), ("Lyon", "France", 2), ("Berlin", "Germany", 6),
    ("Munich", "Germany", 3), ("Hamburg", "Germany", 3), ("Madrid", "Spain", 6),
    ("Barcelona", "Spain", 5), ("Lisbon", "Portugal", 3), ("Rome", "Italy", 5),
    ("Milan", "Italy", 4), ("Amsterdam", "Netherlands", 4), ("Brussels", "Belgium", 2),
    ("Vienna", "Austria", 2), ("Zurich", "Switzerland", 2), ("Stockholm", "Sweden", 2),
    ("Copenhagen", "Denmark", 2), ("Oslo", "Norway", 1), ("Warsaw", "Poland", 3),
    ("Prague", "Czechia", 2), ("Dublin", "Ireland", 2), ("New York", "United States", 9),
    ("Chicago", "United States", 4), ("Toronto", "Canada", 4), ("Sydney", "Australia", 3),
]  # fmt: skip
_CATALOG = [  # category, subcategory, typical price
    ("Electronics", "Headphones", 79), ("Electronics", "Laptops", 899),
    ("Electronics", "Phones", 599), ("Electronics", "Cameras", 449),
    ("Electronics", "Chargers", 19), ("Home", "Cookware", 49), ("Home", "Lamps", 39),
    ("Home", "Bedding", 59), ("Home", "Furniture", 249), ("Sports", "Running Shoes", 99),
    ("Sports", "Yoga Mats", 29), ("Sports", "Bikes", 599), ("Sports", "Tents", 199),
    ("Books", "Fiction", 14), ("Books", "Cookbooks", 24), ("Books", "Travel Guides", 19),
    ("Clothing", "Jackets", 119), ("Clothing", "T-Shirts", 19), ("Clothing", "Jeans", 59),
    ("Beauty", "Skincare", 24), ("Beauty", "Fragrance", 69), ("Toys", "Board Games", 34),
    ("Toys", "Building Sets", 49),
]  # fmt: skip
_BRANDS = pa.array(
    "Acme Northwind Contoso Fabrikam Globex Initech Hooli Vandelay Nordlys Kestrel Bluepeak "
    "Ironleaf Solace Verdant Lumio Tandem".split())  # fmt: skip
_ADJECTIVES = pa.array(
    "Classic Compact Deluxe Eco Essential Lite Max Mini Pro Smart Sport Ultra Urban".split()
)
_SEGMENTS = (pa.array(["consumer", "small_business", "corporate"]), [0.6, 0.25, 0.15])
_CHANNELS = (pa.array(["web", "app", "store"]), [0.55, 0.35, 0.10])
_METHODS = (pa.array(["card", "paypal", "bank_transfer", "gift_card"]), [0.6, 0.25, 0.1, 0.05])
_ORDER_STATUS = pa.array(["placed", "shipped", "delivered", "cancelled", "returned"])
_PAYMENT_STATUS = pa.array(["authorized", "captured", "failed", "refunded"])
_EVENT_TYPES = pa.array(["page_view", "add_to_cart", "checkout", "purchase"])
_PAGES = pa.array(["home", "search", "category", "product", "checkout", "confirmation"])
_VIEW_P = [0.15, 0.10, 0.25, 0.50]  # page views: home, search, category, product
_FUNNEL_P = [0.72, 0.14, 0.05, 0.09]  # deepest step a session reaches: view, cart, checkout, buy


def rows(table: str, scale: float = 0.01) -> int:
    """Rows `table` has at `scale`; for `order_lines` the expected count (it varies a little)."""
    _check(scale, 0, [table])
    if table == "order_lines":
        return round(rows("orders", scale) * LINES_PER_ORDER)
    if table == "payments":  # one payment per order
        return rows("orders", scale)
    return max(_MINIMUM[table], round(_PER_SCALE[table] * scale))


def generate_table(name: str, scale: float = 0.01, seed: int = 42) -> pa.RecordBatchReader:
    """Stream table `name` at `(scale, seed)` chunk by chunk, so memory stays bounded."""
    _check(scale, seed, [name])
    sizes = {t: rows(t, scale) for t in TABLES if t != "order_lines"}
    if name == "click_events":
        batches = _ingest_order(seed, sizes)
    else:
        n = sizes["orders" if name == "order_lines" else name]
        batches = (_batch(name, _MAKERS[name](seed, sizes, *span)) for span in _spans(n))
    return pa.RecordBatchReader.from_batches(SCHEMAS[name], batches)


def table(name: str, scale: float = 0.01, seed: int = 42) -> pa.Table:
    """The whole table `name` in memory: handy for small scales and tests."""
    return generate_table(name, scale, seed).read_all()


def generate(
    lake: Lakehouse,
    scale: float = 0.01,
    seed: int = 42,
    tables: Iterable[str] | str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    regenerate_mismatched: bool = False,
) -> dict[str, int]:
    """Write each table to `bronze.<name>` in `lake` (skipping existing ones unless `overwrite`).

    Returns the rows written per table (0 for a skipped one). Each commit records the scale and
    seed in its metadata (`workbench.scale`, `workbench.seed`), checked when a table is kept:
    a table from another `(scale, seed)` is an error, or is rewritten when `regenerate_mismatched`.
    """
    names = list(TABLES if tables is None else [tables] if isinstance(tables, str) else tables)
    _check(scale, seed, names)
    todo = [
        n for n in names
        if overwrite or not _kept(lake, n, scale, seed, regenerate_mismatched)
    ]  # fmt: skip
    written = dict.fromkeys(names, 0)
    total = sum(rows(n, scale) for n in todo)
    with tqdm(total=total, unit="rows", unit_scale=True, disable=not (progress and todo)) as bar:
        for name in todo:
            bar.set_description(f"bronze.{name}")
            reader = generate_table(name, scale, seed)

            def counted(reader=reader, name=name) -> Iterator[pa.RecordBatch]:
                for batch in reader:
                    written[name] += batch.num_rows
                    bar.update(batch.num_rows)
                    yield batch

            stream = pa.RecordBatchReader.from_batches(reader.schema, counted())
            meta = {"workbench.dataset": name, "workbench.scale": str(float(scale)),
                    "workbench.seed": str(seed)}  # fmt: skip
            lake.write(f"bronze.{name}", stream, mode="overwrite", metadata=meta)
        bar.total = bar.n  # the order_lines count was an estimate: end the bar at 100%
        bar.refresh()
    return written


def _kept(lake: Lakehouse, name: str, scale: float, seed: int, regenerate: bool = False) -> bool:
    """True when `bronze.<name>` exists from the same `(scale, seed)`; an existing table made
    from others is an error, not a silent mix of two datasets."""
    if not lake.exists(f"bronze.{name}"):
        return False
    for commit in lake.delta(f"bronze.{name}").history():
        if "workbench.seed" in commit:
            found = float(commit["workbench.scale"]), int(commit["workbench.seed"])
            if found != (scale, seed):
                if regenerate:
                    return False
                raise ParameterError(
                    f"bronze.{name} in {lake.root} was generated with scale={found[0]:g}, "
                    f"seed={found[1]}, not scale={scale:g}, seed={seed}.",
                    "Allowed: the scale and seed the lake was generated with.",
                    "pass overwrite=True to regenerate, or use another lake folder.",
                )
            break
    return True


def _check(scale, seed, names: Iterable[str]) -> None:
    """Raise a `ParameterError` (a `WorkbenchError`) naming the bad value and what is allowed."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= MAX_SCALE:
        raise ParameterError(
            f"scale={scale!r} is not a valid scale.",
            f"Allowed: a number greater than 0 and at most {MAX_SCALE}.",
            "scale=1 is 1M orders and 10M click events; notebooks use 0.01, tests 0.001.",
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ParameterError(
            f"seed={seed!r} is not a valid seed.",
            "Allowed: an integer from 0 to 2**32 - 1.",
            "Any fixed integer gives the same tables every time, e.g. seed=42.",
        )
    for name in names:
        if name not in TABLES:
            raise ParameterError(
                f"{name!r} is not a dataset table.",
                f"Allowed: {', '.join(TABLES)}.",
                "Pass names from workbench.datasets.TABLES, or tables=None for all of them.",
            )


def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    # Always three words: SeedSequence([a, b]) equals SeedSequence([a, b, 0]).
    return np.random.default_rng([seed, stream, chunk])


def _spans(n: int) -> Iterator[tuple[int, int, int]]:
    for k, start in enumerate(range(0, n, CHUNK_ROWS)):
        yield k, start, min(start + CHUNK_ROWS, n)


def _batch(name: str, cols: dict) -> pa.RecordBatch:
    schema = SCHEMAS[name]
    arrays = [c if isinstance(c := cols[f.name], pa.Array) else pa.array(c, f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _pick(rng, words_p, n) -> pa.Array:
    words, p = words_p
    return words.take(rng.choice(len(words), size=n, p=p))


def _draw(cdf: np.ndarray, rng, n: int) -> np.ndarray:
    """Ids 1..len(cdf) drawn with the skewed weights behind `cdf` (some are picked far more)."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1) + 1


@functools.lru_cache(maxsize=4)
def _customer_facts(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Signup times (orders come after them) and the cdf of who places an order."""
    created = np.concatenate(
        [_customers(seed, {"customers": n}, *s)["created_at"] for s in _spans(n)]
    )
    # Each customer buys at their own skewed rate, from signup on: weight = rate * time as customer.
    weights = _rng(seed, 10).lognormal(0.0, 1.2, n) * (_ORDERS_TO - created)
    return created, np.cumsum(weights) / weights.sum()


@functools.lru_cache(maxsize=4)
def _product_facts(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Prices and the cdf of each product's popularity."""
    prices = [_products(seed, {"products": n}, *s)["price"] for s in _spans(n)]
    weights = _rng(seed, 11).lognormal(0.0, 1.5, n)
    return np.concatenate(prices), np.cumsum(weights) / weights.sum()


def _customers(seed, sizes, k, start, stop) -> dict:
    rng, n = _rng(seed, 0, k), stop - start
    ids = np.arange(start + 1, stop + 1)
    first = _FIRST.take(rng.integers(len(_FIRST), size=n))
    last = _LAST.take(rng.integers(len(_LAST), size=n))
    city = rng.choice(len(_CITIES), size=n, p=_weights(_CITIES))
    # sqrt(u): signups grow over time, as a young shop's do.
    created = _CUSTOMERS_FROM + (np.sqrt(rng.random(n)) * (_CUSTOMERS_TO - _CUSTOMERS_FROM))
    created = created.astype(np.int64)
    changed = rng.random(n) < 0.3  # a third of customers changed something since signing up
    updated = created + (changed * rng.random(n) * (_NOW - created)).astype(np.int64)
    domain = _DOMAINS.take(rng.integers(len(_DOMAINS), size=n))
    email = pc.binary_join_element_wise(
        pc.utf8_lower(first), ".", pc.utf8_lower(last), pc.cast(pa.array(ids), _S), "@", domain, ""
    )
    return dict(
        customer_id=ids, name=pc.binary_join_element_wise(first, last, " "), email=email,
        city=pa.array([c[0] for c in _CITIES]).take(city),
        country=pa.array([c[1] for c in _CITIES]).take(city),
        segment=_pick(rng, _SEGMENTS, n), created_at=created, updated_at=updated,
    )  # fmt: skip


def _products(seed, sizes, k, start, stop) -> dict:
    rng, n = _rng(seed, 1, k), stop - start
    sub = rng.integers(len(_CATALOG), size=n)
    brand = _BRANDS.take(rng.integers(len(_BRANDS), size=n))
    adjective = _ADJECTIVES.take(rng.integers(len(_ADJECTIVES), size=n))
    subcategory = pa.array([c[1] for c in _CATALOG]).take(sub)
    typical = np.array([c[2] for c in _CATALOG], dtype=np.float64)[sub]
    price = np.maximum(np.ceil(typical * rng.lognormal(0.0, 0.4, n)), 1.0) - 0.01  # 19.99 style
    updated = rng.integers(_NOW - 730 * _DAY, _NOW - _DAY, size=n)
    return dict(
        product_id=np.arange(start + 1, stop + 1),
        name=pc.binary_join_element_wise(brand, adjective, subcategory, " "),
        category=pa.array([c[0] for c in _CATALOG]).take(sub), subcategory=subcategory,
        brand=brand, price=np.round(price, 2), updated_at=updated,
    )  # fmt: skip


def _orders(seed, sizes, k, start, stop) -> dict:
    rng, n = _rng(seed, 2, k), stop - start
    created, cdf = _customer_facts(seed, sizes["customers"])
    customer = _draw(cdf, rng, n)
    signup = created[customer - 1]
    ts = signup + (rng.random(n) * (_ORDERS_TO - signup)).astype(np.int64)
    u, recent = rng.random(n), ts > _NOW - 2 * _DAY  # recent orders are still on their way
    status = np.where(
        recent,
        np.select([u < 0.5, u < 0.95], [0, 1], 3),  # placed, shipped, cancelled
        np.select([u < 0.9, u < 0.95], [2, 3], 4),  # delivered, cancelled, returned
    )
    return dict(
        order_id=np.arange(start + 1, stop + 1), customer_id=customer, order_ts=ts,
        status=_ORDER_STATUS.take(status), channel=_pick(rng, _CHANNELS, n), _status=status,
    )  # fmt: skip


def _order_lines(seed, sizes, k, start, stop) -> dict:
    rng, n = _rng(seed, 3, k), stop - start
    prices, cdf = _product_facts(seed, sizes["products"])
    per_order = 1 + np.minimum(rng.poisson(LINES_PER_ORDER - 1, n), 19)
    first = np.cumsum(per_order) - per_order
    line_no = np.arange(per_order.sum()) - np.repeat(first, per_order) + 1
    m = len(line_no)
    product = _draw(cdf, rng, m)
    quantity = np.minimum(rng.geometric(0.7, m), 10)
    unit_price = prices[product - 1]
    rate = rng.choice([0.05, 0.1, 0.15, 0.2], size=m) * (rng.random(m) < 0.2)
    return dict(
        order_id=np.repeat(np.arange(start + 1, stop + 1), per_order), line_no=line_no,
        product_id=product, quantity=quantity, unit_price=unit_price,
        discount=np.round(quantity * unit_price * rate, 2),  # money off the line, in cents
    )  # fmt: skip


def _payments(seed, sizes, k, start, stop) -> dict:
    rng, n = _rng(seed, 4, k), stop - start
    order, lines = _orders(seed, sizes, k, start, stop), _order_lines(seed, sizes, k, start, stop)
    net = lines["quantity"] * lines["unit_price"] - lines["discount"]
    amount = np.round(np.bincount(lines["order_id"] - start - 1, weights=net, minlength=n), 2)
    delay = np.minimum(rng.lognormal(np.log(20 * _US), 1.0, n), 1800 * _US).astype(np.int64)
    failed = rng.random(n) < 0.6  # a cancelled order's payment: failed, else refunded
    status = np.choose(order["_status"], [0, 1, 1, np.where(failed, 2, 3), 3])
    return dict(
        payment_id=order["order_id"], order_id=order["order_id"],
        paid_ts=order["order_ts"] + delay, amount=amount, method=_pick(rng, _METHODS, n),
        status=_PAYMENT_STATUS.take(status),
    )  # fmt: skip


def _click_events(seed, sizes, k, start, stop) -> dict:
    rng, n = _rng(seed, 5, k), stop - start
    _, customer_cdf = _customer_facts(seed, sizes["customers"])
    prices, product_cdf = _product_facts(seed, sizes["products"])
    length = np.minimum(rng.geometric(1 / 6, n), 36)  # events per session
    ends = np.cumsum(length)
    s = int(np.searchsorted(ends, n)) + 1  # sessions needed to fill n events
    length = length[:s]
    length[-1] -= ends[s - 1] - n  # the chunk's last session is cut short
    stage = np.minimum(rng.choice(4, size=s, p=_FUNNEL_P), length - 1)
    # Each chunk owns a slice of the day proportional to its rows, so the rate is even.
    t0, t1 = (_CLICKS_FROM + (_CLICKS_TO - _CLICKS_FROM) * i // sizes["click_events"]
              for i in (start, stop))  # fmt: skip
    begin = rng.integers(t0, t1, size=s)
    customer, cart = _draw(customer_cdf, rng, s), _draw(product_cdf, rng, s)
    session = np.repeat(np.arange(s), length)
    first = np.cumsum(length) - length  # each session's first event
    pos = np.arange(n) - first[session]
    left, depth = length[session] - 1 - pos, stage[session]  # events after this one; funnel depth
    role = np.where(left < depth, depth - left, 0)  # 0 view, 1 add_to_cart, 2 checkout, 3 purchase
    gap = np.minimum(rng.exponential(30 * _US, n), 300 * _US).astype(np.int64)
    gap[pos == 0] = 0
    elapsed = np.cumsum(gap)
    event_time = begin[session] + elapsed - elapsed[first][session]
    before_cart = (left == depth) & (depth > 0)  # the product page where the cart add happens
    view = np.where(before_cart, 3, rng.choice(4, size=n, p=_VIEW_P))
    page = np.where(role == 0, view, role + 2)
    product = np.where((role == 1) | before_cart, cart[session], _draw(product_cdf, rng, n))
    # Mostly a second or two late; 5% are Pareto-late (minutes to hours), as mobile clients are.
    late = rng.random(n) < 0.05
    tail = 30 * _US * (1.0 - rng.random(n)) ** (-1 / 0.8)
    delay = np.where(late, tail, rng.lognormal(np.log(2 * _US), 0.8, n))
    return dict(
        event_id=np.arange(start + 1, stop + 1),
        session_id=k * CHUNK_ROWS + 1 + session, customer_id=customer[session],
        event_time=event_time,
        ingest_time=event_time + np.minimum(delay, _MAX_DELAY).astype(np.int64),
        event_type=_EVENT_TYPES.take(role), page=_PAGES.take(page),
        product_id=pa.array(product, _I, mask=page != 3),
        value=np.where(role > 0, prices[cart[session] - 1], 0.0),
    )  # fmt: skip


def _ingest_order(seed: int, sizes: dict) -> Iterator[pa.RecordBatch]:
    """Click batches in ingest-time order, as a consumer of the stream would receive them.

    Chunk k holds event times from the start of its slice on, so after chunk k every row
    ingested before slice k+1 starts is final and can go out; the rest waits for a merge.
    """
    n, held = sizes["click_events"], None
    keys = [("ingest_time", "ascending"), ("event_id", "ascending")]
    for k, start, stop in _spans(n):
        chunk = pa.Table.from_batches(
            [_batch("click_events", _click_events(seed, sizes, k, start, stop))]
        )
        both = chunk if held is None else pa.concat_tables([held, chunk])
        both = both.take(pc.sort_indices(both, keys)).combine_chunks()
        ingest = both["ingest_time"].to_numpy().view(np.int64)
        horizon = _CLICKS_FROM + (_CLICKS_TO - _CLICKS_FROM) * stop // n
        cut = len(both) if stop == n else int(np.searchsorted(ingest, horizon))
        yield from both.slice(0, cut).to_batches()
        held = both.slice(cut)


def _weights(items) -> np.ndarray:
    w = np.array([item[-1] for item in items], dtype=np.float64)
    return w / w.sum()


_MAKERS = dict(customers=_customers, products=_products, orders=_orders,
               order_lines=_order_lines, payments=_payments)  # fmt: skip
