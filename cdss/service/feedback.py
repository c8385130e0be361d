"""The service's SQLite store: cards served, card feedback (outcomes, override reasons), seen JWT ids.

Why a store at all: feedback names only a card uuid, so the service remembers which rule (and
which rule set digest) each served card came from; `cdss feedback report` then shows a clinician
which rules are overridden and why. No patient document, no context ids, and free-text override
comments only when the operator opts in (`store_user_comments`), because a clinician's comment may
name the patient. The card uuids are patient-derived all the same (docs/SERVICE.md, "Feedback"):
a guess of the answers can be tested against one, and the cards of one evaluation share their tail.

One file, shared by every worker process (WAL mode): it also holds the JWT ids already seen, so
a token replayed against another worker is still refused.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import CdssError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
    uuid TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    rule_set_id TEXT NOT NULL,
    rule_set_digest TEXT NOT NULL,
    first_served REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    card_uuid TEXT NOT NULL,
    rule_id TEXT,
    rule_set_digest TEXT,
    service_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason_system TEXT,
    reason_code TEXT,
    reason_display TEXT,
    user_comment TEXT,
    outcome_timestamp TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_rule ON feedback(rule_id);
CREATE TABLE IF NOT EXISTS seen_jti (
    iss TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (iss, jti)
);
"""


class StoreError(CdssError):
    """The feedback database cannot be opened or written."""


class FeedbackStore:
    """A thread-safe handle on the SQLite file (one connection per process, serialised by a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.exists():  # e.g. the default ~/.local/state/cdss: private, it holds token ids
            try:
                self.path.parent.mkdir(mode=0o700, parents=True)
            except OSError as error:
                raise StoreError(f"{self.path.parent}: cannot create the feedback directory "
                                 f"({error.strerror or error})") from None
        try:
            self._db = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot open the feedback database ({error})") from None
        self._lock = threading.Lock()
        self._last_purge = 0.0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ cards served
    def record_cards(self, cards: Iterable[Mapping[str, Any]], rule_set_id: str, digest: str) -> None:
        """Remember rule and digest of each served card (by uuid), so later feedback can name the rule."""
        now = time.time()
        # result-level cards (issue 17: conflicts, questions, review, scope) have no rule: named by their kind
        rows = [(c["uuid"], c.get("rule") or f"result-{c.get('kind', 'card')}", rule_set_id, digest, now) for c in cards]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO cards VALUES (?, ?, ?, ?, ?)", rows)

    # ------------------------------------------------------------ feedback
    def record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int:
        """Store validated feedback items (see requests.feedback_items); returns how many."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    row = self._db.execute("SELECT rule_id, rule_set_digest FROM cards WHERE uuid = ?",
                                           (item["card"],)).fetchone()
                    rule_id, digest = row if row else (None, None)
                    self._db.execute(
                        "INSERT INTO feedback (card_uuid, rule_id, rule_set_digest, service_id, outcome, reason_system,"
                        " reason_code, reason_display, user_comment, outcome_timestamp, received)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (item["card"], rule_id, digest, service_id, item["outcome"], item.get("reason_system"),
                         item.get("reason_code"), item.get("reason_display"), item.get("user_comment"),
                         item["outcomeTimestamp"], now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(items)

    def rows(self) -> list[dict[str, Any]]:
        """Every feedback row, oldest first (for the report)."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT card_uuid, rule_id, rule_set_digest, service_id, outcome, reason_system, reason_code,"
                " reason_display, user_comment, outcome_timestamp FROM feedback ORDER BY id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    # ------------------------------------------------------------ JWT replay
    def first_use(self, iss: str, jti: str, expires: float) -> bool:
        """True the first time (iss, jti) is presented before it expires; False for a replay."""
        now = time.time()
        with self._lock:
            if now - self._last_purge > 60:
                self._db.execute("DELETE FROM seen_jti WHERE expires < ?", (now,))
                self._last_purge = now
            try:
                self._db.execute("INSERT INTO seen_jti VALUES (?, ?, ?)", (iss, jti, expires))
            except sqlite3.IntegrityError:
                return False
        return True


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per rule: how often its cards were accepted / overridden, and the override reasons, most frequent first."""
    rules: dict[str, dict[str, Any]] = {}
    for row in rows:
        rule = row["rule_id"] or "(card not served by this database)"
        entry = rules.setdefault(rule, {"rule": rule, "accepted": 0, "overridden": 0, "digests": set(), "reasons": {},
                                        "comments": []})
        entry[row["outcome"]] += 1
        if row["rule_set_digest"]:
            entry["digests"].add(row["rule_set_digest"])
        if row["outcome"] == "overridden":
            if row["reason_code"]:
                label = row["reason_display"] or row["reason_code"]
                key = f"{label} [{row['reason_code']}]"
            else:
                key = "(no reason given)"
            entry["reasons"][key] = entry["reasons"].get(key, 0) + 1
            if row["user_comment"]:
                entry["comments"].append(row["user_comment"])
    out = []
    for entry in rules.values():
        total = entry["accepted"] + entry["overridden"]
        out.append({
            "rule": entry["rule"], "feedback": total, "accepted": entry["accepted"], "overridden": entry["overridden"],
            "override_rate": round(entry["overridden"] / total, 3) if total else 0.0,
            "reasons": [{"reason": k, "count": v} for k, v in sorted(entry["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))],
            "comments": entry["comments"],
            "rule_set_digests": sorted(entry["digests"]),
        })
    out.sort(key=lambda e: (-e["overridden"], -e["override_rate"], e["rule"]))
    return {"feedback": len(rows), "rules": out}


def render_text(summary: dict[str, Any]) -> str:
    """The report for a clinician: most overridden rules first, each with its reasons."""
    if not summary["rules"]:
        return "No feedback recorded yet."
    lines = [f"{summary['feedback']} feedback item(s); rules by number of overrides:", ""]
    for entry in summary["rules"]:
        lines.append(f"{entry['rule']}: overridden {entry['overridden']} of {entry['feedback']} "
                     f"({entry['override_rate'] * 100:.0f} %), accepted {entry['accepted']}")
        for reason in entry["reasons"]:
            lines.append(f"    {reason['count']:>4} x {reason['reason']}")
        for comment in entry["comments"]:
            lines.append(f"         comment: {' '.join(comment.split())[:200]}")
        if len(entry["rule_set_digests"]) > 1:
            lines.append(f"    (feedback spans {len(entry['rule_set_digests'])} rule set versions)")
    return "\n".join(lines)
