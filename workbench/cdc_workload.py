"""A workload of retail OLTP transactions against a CDC `Source`, random but repeatable.

Each transaction is one business action (a signup, an order, a shipment...). Among them are
the cases that break naive CDC: a key deleted and later re-inserted, a row deleted and
re-inserted in the same transaction, and several changes to one row in one transaction.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from workbench.cdc_source import Source

KINDS = {
    "signup": (("customers",), 3),
    "move": (("customers",), 3),
    "profile_edits": (("customers",), 2),  # three updates of one row in one transaction
    "churn": (("customers",), 1),
    "rejoin": (("customers",), 1),  # a deleted customer id comes back
    "reprice": (("products",), 2),  # two price changes of one row in one transaction
    "place_order": (("orders", "order_lines"), 4),
    "ship": (("orders",), 3),
    "cancel": (("orders",), 1),
    "fix_line": (("order_lines",), 1),  # a line deleted and re-inserted in one transaction
    "drop_line": (("order_lines",), 1),
}
"""Transaction kinds: the tables each needs, and its relative frequency."""

_CITIES = [("Lisbon", "Portugal"), ("Oslo", "Norway"), ("Berlin", "Germany"),
           ("Madrid", "Spain"), ("Toronto", "Canada"), ("Paris", "France")]  # fmt: skip
_NAMES = ["Ada Costa", "Ben Ito", "Chen Silva", "Elena Berg", "Omar Patel", "Zoe Novak"]
_SEGMENTS = ["consumer", "small_business", "corporate"]


class Workload:
    """Random transactions against `source`: a pure function of `seed` and the source's state.

    `hot` (e.g. 0.05) makes every pick of an existing key come from the newest `hot` fraction
    of keys, as OLTP traffic concentrates on recent orders and customers; None picks uniformly.
    """

    def __init__(
        self,
        source: Source,
        seed: int = 0,
        hot: float | None = None,
        mean_gap_ms: int = 2000,
        kinds: list[str] | None = None,
    ):
        self.source, self.hot, self.mean_gap_ms = source, hot, mean_gap_ms
        self.rng = np.random.default_rng(seed)
        tables = set(source.tables())
        names = kinds or list(KINDS)
        self.kinds = [k for k in names if set(KINDS[k][0]) <= tables]
        weights = np.array([KINDS[k][1] for k in self.kinds], dtype=float)
        self.weights = weights / weights.sum()

    def run(self, transactions: int = 10) -> list[str]:
        """Run `transactions` transactions; return the kind of each (a kind that finds nothing
        to act on, such as `ship` with no placed order, commits an empty transaction)."""
        done = []
        for _ in range(transactions):
            kind = self.kinds[self.rng.choice(len(self.kinds), p=self.weights)]
            gap = 1 + int(self.rng.exponential(self.mean_gap_ms))
            ts = (self.source.now_ms + gap) * 1000  # the commit time, in epoch microseconds
            with self.source.transaction(advance_ms=gap) as db:
                getattr(self, "_" + kind)(db, ts)
            done.append(kind)
        return done

    # -- picking rows -----------------------------------------------------------------------

    def _pick(self, db: sqlite3.Connection, table: str, columns: str, where: str = "1 = 1"):
        """One existing row's `columns`, uniformly or among the newest `hot` fraction; None if
        no row matches. Offsets into the key order keep picks repeatable without reading all."""
        (n,) = db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()
        if n == 0:
            return None
        low = 0 if self.hot is None else int(n * (1 - self.hot))
        offset = int(self.rng.integers(low, n))
        return db.execute(
            f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {columns} LIMIT 1 OFFSET ?",
            (offset,),
        ).fetchone()

    def _next_id(self, db: sqlite3.Connection, table: str, column: str) -> int:
        (top,) = db.execute(f"SELECT coalesce(max({column}), 0) FROM {table}").fetchone()
        (logged,) = db.execute(
            "SELECT coalesce(max(json_extract(key, ?)), 0) FROM _cdc_log WHERE tbl = ?",
            (f"$.{column}", table),
        ).fetchone()
        return max(top, logged) + 1  # never reuse a deleted id by accident

    # -- the transactions -------------------------------------------------------------------

    def _signup(self, db, ts):
        customer = self._next_id(db, "customers", "customer_id")
        name = _NAMES[self.rng.integers(len(_NAMES))]
        city, country = _CITIES[self.rng.integers(len(_CITIES))]
        email = f"{name.lower().replace(' ', '.')}{customer}@example.org"
        segment = _SEGMENTS[self.rng.integers(len(_SEGMENTS))]
        db.execute(
            "INSERT INTO customers (customer_id, name, email, city, country, segment, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (customer, name, email, city, country, segment, ts, ts),
        )

    def _move(self, db, ts):
        row = self._pick(db, "customers", "customer_id")
        if row:
            city, country = _CITIES[self.rng.integers(len(_CITIES))]
            db.execute(
                "UPDATE customers SET city = ?, country = ?, updated_at = ? WHERE customer_id = ?",
                (city, country, ts, row[0]),
            )

    def _profile_edits(self, db, ts):
        row = self._pick(db, "customers", "customer_id")
        if row:
            (customer,) = row
            edits = [
                ("email", f"c{customer}.{int(self.rng.integers(1000))}@example.org"),
                ("segment", _SEGMENTS[self.rng.integers(len(_SEGMENTS))]),
                ("name", _NAMES[self.rng.integers(len(_NAMES))]),
            ]
            for column, value in edits:
                db.execute(
                    f"UPDATE customers SET {column} = ?, updated_at = ? WHERE customer_id = ?",
                    (value, ts, customer),
                )

    def _churn(self, db, ts):
        row = self._pick(db, "customers", "customer_id")
        if row:
            db.execute("DELETE FROM customers WHERE customer_id = ?", row)

    def _rejoin(self, db, ts):
        gone = db.execute(
            "SELECT DISTINCT json_extract(key, '$.customer_id') AS id FROM _cdc_log "
            "WHERE tbl = 'customers' AND op = 'd' "
            "AND id NOT IN (SELECT customer_id FROM customers) ORDER BY id"
        ).fetchall()
        if gone:
            (customer,) = gone[int(self.rng.integers(len(gone)))]
            city, country = _CITIES[self.rng.integers(len(_CITIES))]
            db.execute(
                "INSERT INTO customers (customer_id, name, email, city, country, segment, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, 'consumer', ?, ?)",
                (customer, _NAMES[0], f"back{customer}@example.org", city, country, ts, ts),
            )

    def _reprice(self, db, ts):
        row = self._pick(db, "products", "product_id")
        if row:
            for _ in range(2):  # a change, then a correction, in one transaction
                price = round(float(self.rng.uniform(1, 500)), 2)
                db.execute(
                    "UPDATE products SET price = ?, updated_at = ? WHERE product_id = ?",
                    (price, ts, row[0]),
                )

    def _place_order(self, db, ts):
        order = self._next_id(db, "orders", "order_id")
        customer = (
            self._pick(db, "customers", "customer_id") if self._has(db, "customers") else None
        )
        channel = ["web", "app", "store"][self.rng.integers(3)]
        customer_id = customer[0] if customer else 1
        db.execute(
            "INSERT INTO orders (order_id, customer_id, order_ts, status, channel) "
            "VALUES (?, ?, ?, 'placed', ?)",
            (order, customer_id, ts, channel),
        )
        total = 0.0
        for line in range(1, 2 + int(self.rng.integers(3))):
            product = 1 + int(self.rng.integers(50))
            quantity = 1 + int(self.rng.integers(3))
            price = round(float(self.rng.uniform(5, 200)), 2)
            total += quantity * price
            db.execute(
                "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price, discount) "
                "VALUES (?, ?, ?, ?, ?, 0.0)",
                (order, line, product, quantity, price),
            )
        if self._has(db, "payments"):
            db.execute(
                "INSERT INTO payments (payment_id, order_id, paid_ts, amount, method, status) "
                "VALUES (?, ?, ?, ?, 'card', 'authorized')",
                (order, order, ts, round(total, 2)),
            )

    def _ship(self, db, ts):
        row = self._pick(db, "orders", "order_id", "status = 'placed'")
        if row:
            db.execute("UPDATE orders SET status = 'shipped' WHERE order_id = ?", row)
            if self._has(db, "payments"):
                db.execute("UPDATE payments SET status = 'captured' WHERE order_id = ?", row)

    def _cancel(self, db, ts):
        row = self._pick(db, "orders", "order_id", "status = 'placed'")
        if row:
            db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", row)
            if self._has(db, "payments"):
                db.execute("UPDATE payments SET status = 'refunded' WHERE order_id = ?", row)

    def _fix_line(self, db, ts):
        row = self._pick(db, "order_lines", "order_id, line_no")
        if row:
            old = db.execute(
                "SELECT product_id, unit_price FROM order_lines WHERE order_id = ? AND line_no = ?",
                row,
            ).fetchone()
            db.execute("DELETE FROM order_lines WHERE order_id = ? AND line_no = ?", row)
            db.execute(
                "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price, discount) "
                "VALUES (?, ?, ?, ?, ?, 0.0)",
                (*row, old[0], 1 + int(self.rng.integers(5)), old[1]),
            )

    def _drop_line(self, db, ts):
        row = self._pick(db, "order_lines", "order_id, line_no")
        if row:
            db.execute("DELETE FROM order_lines WHERE order_id = ? AND line_no = ?", row)

    @staticmethod
    def _has(db, table: str) -> bool:
        found = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return found is not None
