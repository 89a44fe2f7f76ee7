"""A property test over the real pipeline (R1-R18): people edit both calendars, calsync syncs, both sides agree.

A Hypothesis state machine in the spirit of vdirsyncer's sync state machine. Its rules are a person's edits on
either side, made through the real client libraries (simple-salesforce, exchangelib) or the sandbox's seeding
API: create, change the subject, times or description, delete, make private, add or remove an invitee, move out
of the window, a meeting between the two synced users (organized in Salesforce or in Outlook), and Exchange's
"opened" bump. The ``sync`` rule runs the real flow function (``flows.sync.run_sync``) three times: the sync
itself, a settling sync that may only link delivered copies (no write), and a quiet one that plans nothing. Then:

- every pair inside the window agrees on the synced fields, in the forms each side stores them (C19) and with
  R9/C10's private copies;
- every event a person made exists once on each side of each of its users, and nothing else exists;
- nothing is gone unless a person deleted it (or its partner);
- the settling sync writes nothing and the quiet one plans nothing.

Every person-made event carries a token ("T7 ...") at the start of its subject, kept by every edit, so it is
found on both sides (a private copy, whose subject is "Private", through its pair). Texts come from a strategy
with the values that broke round trips before: trailing whitespace and line breaks, NUL and other control
characters, XML specials, long texts around Salesforce's limits.

Profiles: CI runs a bounded, derandomized one; ``CALSYNC_PROPERTY_PROFILE=long`` runs many random examples
(``CALSYNC_PROPERTY_EXAMPLES`` / ``CALSYNC_PROPERTY_STEPS`` override the numbers).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from tests.flows.conftest import TODAY, World, user_block
from transforms.window import window_bounds

ALICE, BOB = "alice@example.com", "bob@example.com"
CAROL, FRANK = "carol@customer.example", "frank@prospect.example"
USERS = (ALICE, BOB)
UTC = timezone.utc
WIN_START, WIN_END = window_bounds(TODAY)

PROFILES = {"ci": {"max_examples": 12, "stateful_step_count": 12, "derandomize": True},
            "long": {"max_examples": 300, "stateful_step_count": 25, "derandomize": False}}
PROFILE = os.environ.get("CALSYNC_PROPERTY_PROFILE", "ci")

SPEC = {
    "org": {"shared_activities": True},
    "users": [{"email": ALICE, "name": "Alice Adams", "time_zone": "Europe/Berlin"},
              {"email": BOB, "name": "Bob Brown", "time_zone": "America/New_York"}],
    "contacts": [{"email": CAROL, "last_name": "Customer", "owner": ALICE}],
    "leads": [{"email": FRANK, "last_name": "Prospect", "owner": ALICE}],
}

# ---- texts ------------------------------------------------------------------------------------------------------

_NASTY = ["", " ", "   ", "\n", "\r\n", "\n\n", "\t", " \t\n", "\x00", "\x0b", "\x0c", "\x01", "\x1f", "\x7f", "\x85",
          "\xa0", "&", "<", ">", "&amp;", "&#x1A;", '"', "'", "]]>", "<b>bold</b>", "caf\u00e9", "\U0001F600", "\ufffe"]
_WORD = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_BITS = st.lists(st.one_of(st.sampled_from(_NASTY), _WORD), max_size=5).map("".join)


def _long(limits: tuple[int, ...]) -> st.SearchStrategy[str]:
    return st.builds(lambda n, tail: "x" * n + tail, st.sampled_from(limits), st.sampled_from(_NASTY))


SUBJECT_TAIL = st.one_of(_BITS, _BITS, _long((240, 250, 260)))
DESCRIPTION = st.one_of(_BITS, _BITS, _long((31_990, 31_999, 32_010)))
DAY = st.integers(min_value=-20, max_value=50)
HOUR = st.integers(min_value=6, max_value=18)
MINUTES = st.sampled_from([15, 30, 60, 90])
SIDE = st.sampled_from(["salesforce", "email"])
INVITEE = st.sampled_from([CAROL, FRANK])

# ---- what each side stores of a text (an independent model of C19 and the mailbox's stored forms) ---------------

_NOT_IN_A_MAILBOX = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufdd0-\ufddf\ufffe\uffff]")


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _stored(text: str | None, body: bool) -> str:
    text = _NOT_IN_A_MAILBOX.sub("?", text or "")
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip() if body else _clean(text)


def texts_agree(sf_text: str | None, em_text: str | None, limit: int, body: bool) -> bool:
    """A Salesforce text and a mailbox text stand for each other: the same in the forms a mailbox stores, or the
    Salesforce one is the mailbox one cut to ``limit``."""
    sf_s, em_s = _stored(sf_text, body), _stored(em_text, body)
    return sf_s == em_s or (len(em_text or "") > limit and _stored((em_text or "")[:limit], body) == sf_s)


def _ts(value) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class Token:
    """A person-made event: its users (both for a meeting between them), kind, and where it came from."""

    name: str
    kind: str  # single, sf_group, em_group
    origin: str  # salesforce, email
    organizer: str
    users: tuple[str, ...]
    deleted: set[str] = field(default_factory=set)  # users whose copy a person deleted
    private: bool = False


class SyncMachine(RuleBasedStateMachine):
    sandbox = None  # set by the test: one Sandbox for every example

    def __init__(self) -> None:
        super().__init__()
        sb = self.sandbox
        sb.reset()
        self.tmp = Path(tempfile.mkdtemp(prefix="calsync-prop-"))
        self.world = World(sb, self.tmp, sb.seed(SPEC, TODAY))
        path = self.world.configure(user_block(ALICE, allow_mass_delete=True), user_block(BOB, allow_mass_delete=True))
        # Basic auth: the sandbox's pure-Python NTLM costs half a second a sync, and NTLM is tested on its own
        path.write_text(path.read_text().replace('auth_type = "ntlm"', 'auth_type = "basic"'))
        self.sf = self.world.salesforce()
        self.accounts = {u: self.world.account(u) for u in USERS}
        self.tokens: dict[str, Token] = {}
        self.edited: set[str] = set()  # tokens changed since the last sync (C8: a change beats a deletion)
        self.syncs = 0

    def teardown(self) -> None:
        try:
            if self.tokens:
                self.sync()
        finally:
            from exchangelib.protocol import close_connections

            close_connections()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers -------------------------------------------------------------------------------------------------
    def _new_token(self) -> str:
        return f"T{len(self.tokens) + 1}"

    def _tick(self) -> None:
        self.sandbox.clock.advance(timedelta(minutes=1))

    def _start(self, day: int, hour: int) -> datetime:
        return datetime.combine(TODAY + timedelta(days=day), datetime.min.time(), tzinfo=UTC).replace(hour=hour)

    def _sf_rows(self, token: str, user: str) -> list[dict]:
        uid = self.world.ids[user]
        return [e for e in self.sandbox.salesforce.org.events()
                if e["OwnerId"] == uid and (e["Subject"] or "").startswith(token + " ")]

    def _em_rows(self, token: str, user: str) -> list[dict]:
        return [i for i in self.sandbox.exchange.org.items(user) if (i["subject"] or "").startswith(token + " ")]

    def _pairs(self) -> list[tuple]:
        return self.world.query("SELECT user_key, sf_id, email_id, linked FROM pairs")

    def _find(self, token: Token, user: str, side: str) -> list[str]:
        """Ids of the token's event of ``user`` on ``side``, a private copy found through its pair."""
        if side == "salesforce":
            ids = [e["Id"] for e in self._sf_rows(token.name, user)]
            partner = {i["id"] for i in self._em_rows(token.name, user)}
            ids += [p[1] for p in self._pairs() if p[0] == user and p[2] in partner and p[1] not in ids]
        else:
            ids = [i["id"] for i in self._em_rows(token.name, user)]
            partner = {e["Id"] for e in self._sf_rows(token.name, user)}
            ids += [p[2] for p in self._pairs() if p[0] == user and p[1] in partner and p[2] not in ids]
        return ids

    def _item(self, user: str, item_id: str):
        return next(iter(self.accounts[user].fetch(ids=[(item_id, None)])))

    def _live(self, kinds: tuple[str, ...] = ("single", "sf_group", "em_group")) -> list[str]:
        return sorted(t.name for t in self.tokens.values() if t.kind in kinds and not t.deleted)

    # ---- rules: a person's edits ------------------------------------------------------------------------------------
    @rule(user=st.sampled_from(USERS), tail=SUBJECT_TAIL, description=DESCRIPTION, day=DAY, hour=HOUR, minutes=MINUTES,
          invitees=st.lists(INVITEE, unique=True, max_size=2))
    def create_in_salesforce(self, user, tail, description, day, hour, minutes, invitees):
        token = self._new_token()
        start = self._start(day, hour)
        ev = self.sf.Event.create({"Subject": f"{token} {tail}"[:255], "OwnerId": self.world.ids[user],
                                   "StartDateTime": start.isoformat(), "DurationInMinutes": minutes,
                                   "Description": description[:32_000] or None})["id"]
        for who in invitees:
            self.sf.EventRelation.create({"EventId": ev, "RelationId": self.world.ids[who], "IsInvitee": True})
        self.tokens[token] = Token(token, "single", "salesforce", user, (user,))
        self._tick()

    @rule(user=st.sampled_from(USERS), tail=SUBJECT_TAIL, description=DESCRIPTION, day=DAY, hour=HOUR, minutes=MINUTES,
          invitees=st.lists(INVITEE, unique=True, max_size=2))
    def create_in_outlook(self, user, tail, description, day, hour, minutes, invitees):
        from exchangelib import Attendee, CalendarItem, EWSDateTime, Mailbox

        token = self._new_token()
        acct = self.accounts[user]
        start = EWSDateTime.from_datetime(self._start(day, hour))
        # (exchangelib refuses a subject over 255 characters)
        item = CalendarItem(account=acct, folder=acct.calendar, subject=f"{token} {tail}"[:255], body=description,
                            start=start, end=start + timedelta(minutes=minutes),
                            required_attendees=[Attendee(mailbox=Mailbox(email_address=a)) for a in invitees] or None)
        item.save(send_meeting_invitations="SendToNone")
        self.tokens[token] = Token(token, "single", "email", user, (user,))
        self._tick()

    @rule(organizer=st.sampled_from(USERS), origin=SIDE, tail=SUBJECT_TAIL, day=DAY, hour=HOUR,
          with_contact=st.booleans())
    def meeting_between_the_synced_users(self, organizer, origin, tail, day, hour, with_contact):
        from exchangelib import Attendee, CalendarItem, EWSDateTime, Mailbox

        token = self._new_token()
        other = BOB if organizer == ALICE else ALICE
        subject, start = f"{token} {tail}"[:255], self._start(day, hour)
        if origin == "salesforce":  # a group event: the invitee gets a child event (R13, C15)
            ev = self.sf.Event.create({"Subject": subject, "OwnerId": self.world.ids[organizer],
                                       "StartDateTime": start.isoformat(), "DurationInMinutes": 60})["id"]
            for who in [other] + ([CAROL] if with_contact else []):
                self.sf.EventRelation.create({"EventId": ev, "RelationId": self.world.ids[who], "IsInvitee": True})
            kind = "sf_group"
        else:  # an Outlook meeting sent to the other user (R14, C16)
            acct = self.accounts[organizer]
            s = EWSDateTime.from_datetime(start)
            item = CalendarItem(account=acct, folder=acct.calendar, subject=subject, start=s, end=s + timedelta(hours=1),
                                required_attendees=[Attendee(mailbox=Mailbox(email_address=a))
                                                    for a in [other] + ([CAROL] if with_contact else [])])
            item.save(send_meeting_invitations="SendToAllAndSaveCopy")
            kind = "em_group"
        self.tokens[token] = Token(token, kind, origin, organizer, (organizer, other))
        self._tick()

    def _target(self, data, kinds=("single", "sf_group", "em_group"), deletable=False) -> tuple[Token, str, str, str] | None:
        """A token, one of its users, a side and the id to change there (organizer's side for group meetings)."""
        names = [n for n in self._live(kinds) if not (deletable and n in self.edited)]
        if not names:
            return None
        token = self.tokens[data.draw(st.sampled_from(names), label="token")]
        side = data.draw(SIDE, label="side")
        users = [token.organizer] if token.kind == "sf_group" else list(token.users)
        user = data.draw(st.sampled_from(users), label="user")
        ids = self._find(token, user, side)
        if len(ids) != 1:
            return None
        return token, user, side, ids[0]

    @precondition(lambda self: self._live())
    @rule(data=st.data(), what=st.sampled_from(["subject", "times", "description"]), tail=SUBJECT_TAIL,
          description=DESCRIPTION, day=DAY, hour=HOUR, minutes=MINUTES)
    def edit(self, data, what, tail, description, day, hour, minutes):
        found = self._target(data)
        if found is None:
            return
        token, user, side, native_id = found
        start = self._start(day, hour)
        if side == "salesforce":
            change = {"subject": {"Subject": f"{token.name} {tail}"[:255]},
                      "times": {"StartDateTime": start.isoformat(), "EndDateTime": (start + timedelta(minutes=minutes)).isoformat()},
                      "description": {"Description": description[:32_000] or None}}[what]
            self.sf.Event.update(native_id, change)
        else:
            from exchangelib import EWSDateTime

            item = self._item(user, native_id)
            if what == "subject":
                item.subject, fields = f"{token.name} {tail}"[:255], ["subject"]
            elif what == "times":
                item.start = EWSDateTime.from_datetime(start)
                item.end = item.start + timedelta(minutes=minutes)
                fields = ["start", "end"]
            else:
                item.body, fields = description, ["body"]
            organizer = token.kind != "single" and user == token.organizer
            item.save(update_fields=fields, send_meeting_invitations="SendToAllAndSaveCopy" if organizer else "SendToNone")
        self.edited.add(token.name)
        self._tick()

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def delete(self, data):
        found = self._target(data, deletable=True)
        if found is None:
            return
        token, user, side, native_id = found
        if token.kind == "sf_group" or (token.kind == "em_group" and user == token.organizer and side == "email"):
            gone = set(token.users)  # the organizer's meeting: every copy goes with it (C15, cancellations)
        elif token.kind == "em_group" and user == token.organizer:
            gone = set(token.users)  # her Salesforce event: calsync deletes her meeting, which cancels his copy
        else:
            gone = {user}
        if side == "salesforce":
            self.sf.Event.delete(native_id)
        else:
            send = "SendToAllAndSaveCopy" if token.kind != "single" and user == token.organizer else "SendToNone"
            self._item(user, native_id).move_to_trash(send_meeting_cancellations=send)
        token.deleted |= gone
        self._tick()

    @precondition(lambda self: self._live(("single",)))
    @rule(data=st.data())
    def make_private(self, data):
        names = [n for n in self._live(("single",)) if not self.tokens[n].private]
        if not names:
            return
        token = self.tokens[data.draw(st.sampled_from(names), label="token")]
        ids = self._find(token, token.organizer, token.origin)
        if len(ids) != 1:
            return
        if token.origin == "salesforce":
            self.sf.Event.update(ids[0], {"IsPrivate": True})
        else:
            item = self._item(token.organizer, ids[0])
            item.sensitivity = "Private"
            item.save(update_fields=["sensitivity"], send_meeting_invitations="SendToNone")
        token.private = True
        self.edited.add(token.name)
        self._tick()

    @precondition(lambda self: self._live(("single",)))
    @rule(data=st.data(), who=INVITEE, add=st.booleans())
    def change_invitees(self, data, who, add):
        found = self._target(data, kinds=("single",))
        if found is None or found[0].private:
            return
        token, user, side, native_id = found
        if side == "salesforce":
            rels = [r for r in self.sandbox.salesforce.org.relations(native_id) if r["RelationId"] == self.world.ids[who]]
            if add and not rels:
                self.sf.EventRelation.create({"EventId": native_id, "RelationId": self.world.ids[who], "IsInvitee": True})
            elif not add and rels:
                self.sf.EventRelation.delete(rels[0]["Id"])
            else:
                return
        else:
            from exchangelib import Attendee, Mailbox

            item = self._item(user, native_id)
            current = list(item.required_attendees or [])
            emails = [a.mailbox.email_address.lower() for a in current]
            if add and who not in emails:
                current.append(Attendee(mailbox=Mailbox(email_address=who)))
            elif not add and who in emails:
                current = [a for a in current if a.mailbox.email_address.lower() != who]
            else:
                return
            item.required_attendees = current or None
            item.save(update_fields=["required_attendees"], send_meeting_invitations="SendToNone")
        self.edited.add(token.name)
        self._tick()

    @precondition(lambda self: self._live())
    @rule(data=st.data(), days=st.integers(min_value=70, max_value=85))
    def move_out_of_the_window(self, data, days):
        found = self._target(data)
        if found is None:
            return
        token, user, side, native_id = found
        start = self._start(days, 10)
        if side == "salesforce":
            self.sf.Event.update(native_id, {"StartDateTime": start.isoformat(), "EndDateTime": (start + timedelta(hours=1)).isoformat()})
        else:
            from exchangelib import EWSDateTime

            item = self._item(user, native_id)
            item.start = EWSDateTime.from_datetime(start)
            item.end = item.start + timedelta(hours=1)
            organizer = token.kind != "single" and user == token.organizer
            item.save(update_fields=["start", "end"], send_meeting_invitations="SendToAllAndSaveCopy" if organizer else "SendToNone")
        self.edited.add(token.name)
        self._tick()

    @rule(user=st.sampled_from(USERS), data=st.data())
    def opened_in_outlook(self, user, data):
        # Exchange bumps LastModifiedTime (and the ChangeKey) when someone merely opens an item: no change (R7)
        org = self.sandbox.exchange.org
        items = sorted(org.mailbox(user).items)
        if not items:
            return
        with org.lock:
            org.touch(org.mailbox(user).items[data.draw(st.sampled_from(items), label="item")])
        self._tick()

    # ---- the sync and what must hold after it ---------------------------------------------------------------------
    def _run(self) -> tuple[dict, bool]:
        """One sync; and whether it sent a meeting message into another synced user's mailbox."""
        ex = self.sandbox.exchange.org
        before = len(ex.invitations())
        s = self.world.sync()
        assert s["status"] == "succeeded" and s["totals"]["failed"] == 0, s
        return s, any(i["recipient"] in USERS for i in ex.invitations()[before:])

    @staticmethod
    def _writes(s: dict) -> dict:
        return {k: s["totals"][k] for k in ("created", "updated", "deleted")}

    @rule()
    def sync(self):
        _, delivered = self._run()
        settle, _ = self._run()
        if delivered and any(self._writes(settle).values()):
            # a meeting message calsync sent changed a copy in the other synced mailbox (R13/R14): that user's own
            # event follows on this run, which is the one that settles
            settle, _ = self._run()
        assert not any(self._writes(settle).values()), f"the settling sync wrote {self._writes(settle)}: {settle}"
        quiet, _ = self._run()
        assert quiet["totals"]["deltas"] == 0, f"a quiet sync planned deltas: {quiet}"
        self.syncs += 1
        self.edited.clear()
        self._check_presence()
        self._check_pairs_agree()

    def _in_window(self, start, end) -> bool:
        return _ts(start) < WIN_END and _ts(end) > WIN_START

    def _check_presence(self) -> None:
        org, ex = self.sandbox.salesforce.org, self.sandbox.exchange.org
        pairs = self._pairs()
        for user in USERS:
            uid = self.world.ids[user]
            sf_rows = [e for e in org.events() if e["OwnerId"] == uid and self._in_window(e["StartDateTime"], e["EndDateTime"])]
            em_rows = [i for i in ex.items(user) if self._in_window(i["start"], i["end"])]
            sf_token = {e["Id"]: (e["Subject"] or "").split(" ", 1)[0] for e in sf_rows}
            em_token = {i["id"]: (i["subject"] or "").split(" ", 1)[0] for i in em_rows}
            all_sf = {e["Id"]: (e["Subject"] or "").split(" ", 1)[0] for e in org.events() if e["OwnerId"] == uid}
            all_em = {i["id"]: (i["subject"] or "").split(" ", 1)[0] for i in ex.items(user)}
            for u, sf_id, em_id, _linked in pairs:  # a private copy is known by its partner's token
                if u != user:
                    continue
                if sf_token.get(sf_id) == "Private" and em_id in all_em:
                    sf_token[sf_id] = all_em[em_id]
                if em_token.get(em_id) == "Private" and sf_id in all_sf:
                    em_token[em_id] = all_sf[sf_id]
            for side, tokens in (("salesforce", sf_token), ("email", em_token)):
                counts: dict[str, int] = {}
                for t in tokens.values():
                    counts[t] = counts.get(t, 0) + 1
                strays = sorted(t for t in counts if t not in self.tokens)
                assert not strays, f"{user} has events no person made on {side}: {strays}"
                for name, n in counts.items():
                    token = self.tokens[name]
                    assert user in token.users, f"{user} holds {name} on {side}, a meeting of {token.users}"
                    assert n == 1, f"{name} exists {n} times on {user}'s {side} calendar"
            for name, token in self.tokens.items():
                if user not in token.users:
                    continue
                on_sf, on_em = name in sf_token.values(), name in em_token.values()
                if user in token.deleted:  # R8: a person's deletion takes the partner with it
                    assert not (on_sf or on_em), f"{name} of {user} was deleted by a person but is still there"
                elif on_sf or on_em:
                    assert on_sf and on_em, f"{name} of {user} is missing on {'email' if on_sf else 'salesforce'}"
                else:  # moved out of the window (its copy with it when it was paired, C2), never gone
                    assert name in all_sf.values() or name in all_em.values(), f"{name} of {user} is gone"

    def _check_pairs_agree(self) -> None:
        org, ex = self.sandbox.salesforce.org, self.sandbox.exchange.org
        for user, sf_id, em_id, linked in self._pairs():
            ev = org.record(sf_id)
            item = next((i for i in ex.items(user) if i["id"] == em_id), None)
            if ev is None or ev["IsDeleted"] or item is None:
                continue
            if not (self._in_window(ev["StartDateTime"], ev["EndDateTime"]) or self._in_window(item["start"], item["end"])):
                continue
            where = f"pair {ev['Subject']!r} / {item['subject']!r} of {user}"
            assert (_ts(ev["StartDateTime"]), _ts(ev["EndDateTime"])) == (_ts(item["start"]), _ts(item["end"])), where
            em_private = item["sensitivity"] in ("Private", "Confidential")
            assert bool(ev["IsPrivate"]) == em_private, where
            if em_private:
                assert "Private" in (ev["Subject"], item["subject"]), where  # R9: one side is the busy copy
                continue
            assert texts_agree(ev["Subject"], item["subject"], 255, body=False), where
            if linked:
                continue  # a child's invitees and description are its parent's (C15)
            assert texts_agree(ev["Description"], item["body"], 32_000, body=True), where
            sf_people = {r["RelationId"] for r in org.relations(sf_id) if r["IsInvitee"]}
            sf_emails = {e for e, rid in ((CAROL, self.world.ids[CAROL]), (FRANK, self.world.ids[FRANK])) if rid in sf_people}
            em_emails = {a["email"] for a in item["required_attendees"] + item["optional_attendees"]} & {CAROL, FRANK}
            assert sf_emails == em_emails, where


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from sandbox import Sandbox

    with Sandbox(tmp_path_factory.mktemp("property-sandbox")) as sb:
        yield sb


def test_sync_state_machine(sandbox):
    profile = dict(PROFILES[PROFILE])
    profile["max_examples"] = int(os.environ.get("CALSYNC_PROPERTY_EXAMPLES", profile["max_examples"]))
    profile["stateful_step_count"] = int(os.environ.get("CALSYNC_PROPERTY_STEPS", profile["stateful_step_count"]))
    SyncMachine.sandbox = sandbox
    run_state_machine_as_test(SyncMachine, settings=settings(
        deadline=None, database=None, suppress_health_check=list(HealthCheck), **profile))
