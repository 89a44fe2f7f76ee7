"""SOQL for the sandbox: a tokenizer, a recursive-descent parser, a schema check and an executor.

The subset calsync needs (SOQL and SOSL Reference,
https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select.htm):

    SELECT field, Parent.Field, (SELECT ... FROM ChildRelationship [WHERE] [ORDER BY] [LIMIT]), COUNT()
    FROM Object
    [WHERE cond]   cond: AND / OR / NOT, parentheses, = != <> < > <= >=, [NOT] IN (...), LIKE,
                   NULL, TRUE/FALSE, date (2026-11-24) and dateTime (2026-11-24T00:00:00Z) literals
    [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]

Rules copied from the reference:
- "Client applications must specify parentheses when nesting operators. However, multiple operators of
  the same type do not need to be nested." (conditionExpression,
  https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_conditionexpression.htm)
- String comparison and LIKE are case-insensitive; ORDER BY sorts case-insensitively and, "By default,
  null values are sorted first" (ORDER BY,
  https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_orderby.htm).
- Polymorphic lookups (Who, What, Owner on Event, Relation) point at the "Name" entity, so only its
  fields may follow them (Relationship queries,
  https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_relationships_and_polymorph_keys.htm).

Error messages follow the real API's shape: the query line, a caret, "ERROR at Row:r:Column:c", then
the message (e.g. "No such column 'X' on entity 'Event'. If you are attempting to use a custom field,
be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call
for the appropriate names.").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from . import ids
from .schema import NAME_FIELDS, Child, Field, SObject


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------- tokens

KEYWORDS = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "NULL", "TRUE", "FALSE", "ORDER", "BY",
    "ASC", "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "INCLUDES", "EXCLUDES", "GROUP", "HAVING",
    "WITH", "FOR", "USING", "TYPEOF",
}


@dataclass(frozen=True)
class Token:
    kind: str  # ident, kw, string, number, date, datetime, op, '(' ')' ',' '.', eof
    value: Any
    pos: int
    text: str


_DT_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?(Z|[+-]\d{2}:?\d{2}))?"
)
_NUM_RE = re.compile(r"-?\d+(?:\.\d+)?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\",
            "%": "\\%", "_": "\\_"}


def tokenize(text: str) -> list[Token]:
    toks: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise _err_at(text, i, "MALFORMED_QUERY", "line 1:%d no viable alternative at character '''" % i)
                c = text[j]
                if c == "\\":
                    if j + 1 >= n or text[j + 1] not in _ESCAPES:
                        raise _err_at(text, j, "MALFORMED_QUERY", "Invalid string literal: bad escape sequence")
                    buf.append(_ESCAPES[text[j + 1]])
                    j += 2
                    continue
                if c == "'":
                    break
                buf.append(c)
                j += 1
            toks.append(Token("string", "".join(buf), i, text[i : j + 1]))
            i = j + 1
            continue
        if ch.isdigit() or (ch == "-" and i + 1 < n and text[i + 1].isdigit()):
            m = _DT_RE.match(text, i)
            if m and ch != "-":
                y, mo, d, hh, mm, ss, frac, tz = m.groups()
                try:
                    if hh is None:
                        toks.append(Token("date", date(int(y), int(mo), int(d)), i, m.group(0)))
                    else:
                        micro = int((frac or "0").ljust(3, "0")) * 1000
                        if tz == "Z":
                            tzinfo = timezone.utc
                        else:
                            sign = 1 if tz[0] == "+" else -1
                            digits = tz[1:].replace(":", "")
                            tzinfo = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
                        dt = datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss), micro, tzinfo)
                        toks.append(Token("datetime", dt.astimezone(timezone.utc), i, m.group(0)))
                except ValueError:
                    raise _err_at(text, i, "MALFORMED_QUERY", f"value of date literal is invalid: {m.group(0)}")
                i = m.end()
                continue
            m = _NUM_RE.match(text, i)
            assert m
            raw = m.group(0)
            toks.append(Token("number", float(raw) if "." in raw else int(raw), i, raw))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)
        if m:
            word = m.group(0)
            if word.upper() in KEYWORDS:
                toks.append(Token("kw", word.upper(), i, word))
            else:
                toks.append(Token("ident", word, i, word))
            i = m.end()
            continue
        two = text[i : i + 2]
        if two in ("!=", "<>", "<=", ">="):
            toks.append(Token("op", "!=" if two == "<>" else two, i, two))
            i += 2
            continue
        if ch in "=<>":
            toks.append(Token("op", ch, i, ch))
            i += 1
            continue
        if ch in "(),.":
            toks.append(Token(ch, ch, i, ch))
            i += 1
            continue
        raise _err_at(text, i, "MALFORMED_QUERY", f"line 1:{i} no viable alternative at character '{ch}'")
    toks.append(Token("eof", None, n, "<EOF>"))
    return toks


def _err_at(text: str, pos: int, code: str, msg: str) -> SoqlError:
    """The real error shape: the line of the query, a caret under the position, then the message."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    if line_end == -1:
        line_end = len(text)
    row = text.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    # the real API shows a window of the statement around the error
    lo = max(line_start, pos - 60)
    hi = min(line_end, pos + 60)
    snippet = text[lo:hi]
    caret = " " * (pos - lo) + "^"
    return SoqlError(code, f"\n{snippet}\n{caret}\nERROR at Row:{row}:Column:{col}\n{msg}")


# ---------------------------------------------------------------------------------------------- AST


@dataclass
class FieldRef:
    path: list[str]
    pos: int


@dataclass
class Value:
    kind: str  # string, number, date, datetime, null, bool
    value: Any
    pos: int


@dataclass
class Cmp:
    ref: FieldRef
    op: str  # = != < > <= >= like in notin
    value: Any  # Value or list[Value]


@dataclass
class BoolOp:
    op: str  # AND / OR
    items: list[Any]


@dataclass
class Not:
    item: Any


@dataclass
class Order:
    ref: FieldRef
    desc: bool
    nulls_last: bool


@dataclass
class Query:
    obj: str
    obj_pos: int
    select: list[Any]  # FieldRef | Query (subquery) | "COUNT"
    where: Any = None
    order: list[Order] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.value in words

    def unexpected(self, t: Token | None = None) -> SoqlError:
        t = t or self.tok
        return _err_at(self.text, t.pos, "MALFORMED_QUERY", f"unexpected token: {t.text if t.kind != 'eof' else '<EOF>'}")

    def expect_kw(self, word: str) -> Token:
        if not self.is_kw(word):
            raise self.unexpected()
        return self.next()

    def expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self.unexpected()
        return self.next()

    # grammar
    def parse(self) -> Query:
        q = self.query(sub=False)
        if self.tok.kind != "eof":
            raise self.unexpected()
        return q

    def query(self, sub: bool) -> Query:
        self.expect_kw("SELECT")
        select: list[Any] = []
        while True:
            if self.tok.kind == "(":
                if sub:
                    raise self.unexpected()
                self.next()
                select.append(self.query(sub=True))
                self.expect(")")
            elif self.tok.kind == "ident" and self.tok.value.upper() == "COUNT" and self.toks[self.i + 1].kind == "(":
                t = self.next()
                self.next()
                if self.tok.kind != ")":
                    raise _err_at(self.text, t.pos, "MALFORMED_QUERY",
                                  "Only COUNT() is supported by this sandbox; aggregate functions are not")
                self.next()
                select.append("COUNT")
            else:
                select.append(self.field_ref())
            if self.tok.kind == ",":
                self.next()
                continue
            break
        self.expect_kw("FROM")
        obj = self.expect("ident")
        q = Query(obj.value, obj.pos, select)
        if self.is_kw("WHERE"):
            self.next()
            q.where = self.condition()
        if self.is_kw("ORDER"):
            self.next()
            self.expect_kw("BY")
            while True:
                ref = self.field_ref()
                desc = False
                if self.is_kw("ASC", "DESC"):
                    desc = self.next().value == "DESC"
                nulls_last = False
                if self.is_kw("NULLS"):
                    self.next()
                    if not self.is_kw("FIRST", "LAST"):
                        raise self.unexpected()
                    nulls_last = self.next().value == "LAST"
                q.order.append(Order(ref, desc, nulls_last))
                if self.tok.kind == ",":
                    self.next()
                    continue
                break
        if self.is_kw("LIMIT"):
            self.next()
            t = self.expect("number")
            if not isinstance(t.value, int) or t.value < 0:
                raise self.unexpected(t)
            q.limit = t.value
        if self.is_kw("OFFSET"):
            self.next()
            t = self.expect("number")
            if not isinstance(t.value, int) or t.value < 0:
                raise self.unexpected(t)
            q.offset = t.value
        if self.is_kw("GROUP", "HAVING", "WITH", "FOR", "USING", "TYPEOF"):
            raise _err_at(self.text, self.tok.pos, "MALFORMED_QUERY",
                          f"{self.tok.value} is not supported by the calsync sandbox")
        return q

    def field_ref(self) -> FieldRef:
        t = self.tok
        if t.kind != "ident":
            raise self.unexpected()
        self.next()
        path = [t.value]
        while self.tok.kind == ".":
            self.next()
            path.append(self.expect("ident").value)
        return FieldRef(path, t.pos)

    # cond := term ((AND term)* | (OR term)*)      -- mixing needs parentheses
    def condition(self) -> Any:
        first = self.term()
        if not self.is_kw("AND", "OR"):
            return first
        op = self.tok.value
        items = [first]
        while self.is_kw("AND", "OR"):
            if self.tok.value != op:
                raise self.unexpected()
            self.next()
            items.append(self.term())
        return BoolOp(op, items)

    def term(self) -> Any:
        if self.is_kw("NOT"):
            self.next()
            return Not(self.term())
        if self.tok.kind == "(":
            self.next()
            c = self.condition()
            self.expect(")")
            return c
        ref = self.field_ref()
        if self.is_kw("NOT"):
            self.next()
            if not self.is_kw("IN"):
                raise self.unexpected()
            self.next()
            return Cmp(ref, "notin", self.value_list())
        if self.is_kw("IN"):
            self.next()
            return Cmp(ref, "in", self.value_list())
        if self.is_kw("LIKE"):
            self.next()
            return Cmp(ref, "like", self.value())
        if self.tok.kind == "op":
            op = self.next().value
            return Cmp(ref, op, self.value())
        raise self.unexpected()

    def value_list(self) -> list[Value]:
        if self.tok.kind != "(":
            raise self.unexpected()
        self.next()
        if self.is_kw("SELECT"):
            raise _err_at(self.text, self.tok.pos, "MALFORMED_QUERY", "semi-join sub-selects are not supported by the calsync sandbox")
        vals = [self.value()]
        while self.tok.kind == ",":
            self.next()
            vals.append(self.value())
        self.expect(")")
        return vals

    def value(self) -> Value:
        t = self.tok
        if t.kind in ("string", "number", "date", "datetime"):
            self.next()
            return Value(t.kind, t.value, t.pos)
        if t.kind == "kw" and t.value in ("NULL", "TRUE", "FALSE"):
            self.next()
            if t.value == "NULL":
                return Value("null", None, t.pos)
            return Value("bool", t.value == "TRUE", t.pos)
        raise self.unexpected()


def parse(text: str) -> Query:
    return Parser(text).parse()


# ---------------------------------------------------------------------------------------------- compile

_NO_COLUMN = ("No such column '{f}' on entity '{e}'. If you are attempting to use a custom field, be sure to "
              "append the '__c' after the custom field name. Please reference your WSDL or the describe call "
              "for the appropriate names.")
_NO_TYPE = ("sObject type '{t}' is not supported. If you are attempting to use a custom object, be sure to "
            "append the '__c' after the entity name. Please reference your WSDL or the describe call for the "
            "appropriate names.")
_NO_REL = ("Didn't understand relationship '{r}' in field path. If you are attempting to use a custom "
           "relationship, be sure to append the '__r' after the custom relationship name. Please reference "
           "your WSDL or the describe call for the appropriate names.")
_NO_CHILD = ("Didn't understand relationship '{r}' in FROM part of query call. If you are attempting to use a "
             "custom relationship, be sure to append the '__r' after the custom relationship name. Please "
             "reference your WSDL or the describe call for the appropriate names.")


@dataclass
class Path:
    """A resolved field path: zero or more lookups, then a field (or a Name-entity field name)."""

    lookups: list[Field]  # reference fields followed, in order
    leaf: Field | None  # the field on the last object (None when the last object is the Name entity)
    leaf_name: str  # canonical field name
    rel_names: list[str]  # canonical relationship names, for nesting
    ftype: str  # field type for comparisons


class Host:
    """What the executor needs from the org (implemented by Org)."""

    objects: dict[str, SObject]

    def rows(self, obj: str, include_deleted: bool) -> Iterable[dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def lookup(self, record_id: str | None) -> tuple[str, dict] | None:  # pragma: no cover
        raise NotImplementedError

    def child_rows(self, child: Child, parent_id: str, include_deleted: bool) -> list[dict]:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Compiled:
    obj: SObject
    columns: list[Any]  # Path | CompiledSub | "COUNT"
    where: Callable[[dict], bool] | None
    order: list[tuple[Path, bool, bool]]
    limit: int | None
    offset: int | None
    count_only: bool


@dataclass
class CompiledSub:
    rel: Child
    query: Compiled


class Compiler:
    def __init__(self, text: str, host: Host) -> None:
        self.text = text
        self.host = host

    def err(self, pos: int, code: str, msg: str) -> SoqlError:
        return _err_at(self.text, pos, code, msg)

    def compile(self, q: Query, parent: SObject | None = None) -> Compiled:
        if parent is None:
            obj = self._object(q.obj, q.obj_pos)
        else:
            child = parent.child_lower.get(q.obj.lower())
            if child is None or child.sobject not in self.host.objects:
                raise self.err(q.obj_pos, "INVALID_TYPE", _NO_CHILD.format(r=q.obj))
            obj = self.host.objects[child.sobject]
        columns: list[Any] = []
        seen: set[str] = set()
        count_only = False
        for item in q.select:
            if item == "COUNT":
                if len(q.select) > 1 or parent is not None:
                    raise self.err(q.obj_pos, "MALFORMED_QUERY", "COUNT() must be the only element in the SELECT list")
                count_only = True
                continue
            if isinstance(item, Query):
                sub = self.compile(item, obj)
                rel = obj.child_lower[item.obj.lower()]
                if rel.name.lower() in seen:
                    raise self.err(item.obj_pos, "MALFORMED_QUERY", f"duplicate field selected: {rel.name}")
                seen.add(rel.name.lower())
                columns.append(CompiledSub(rel, sub))
                continue
            path = self.path(obj, item)
            key = ".".join(path.rel_names + [path.leaf_name]).lower()
            if key in seen:
                raise self.err(item.pos, "MALFORMED_QUERY", f"duplicate field selected: {'.'.join(item.path)}")
            seen.add(key)
            columns.append(path)
        where = self.cond(obj, q.where) if q.where is not None else None
        order = []
        for o in q.order:
            p = self.path(obj, o.ref)
            if p.leaf is not None and not p.leaf.sortable:
                raise self.err(o.ref.pos, "INVALID_FIELD",
                               f"field '{p.leaf.name}' can not be sorted in a query call")
            order.append((p, o.desc, o.nulls_last))
        return Compiled(obj, columns, where, order, q.limit, q.offset, count_only)

    def _object(self, name: str, pos: int) -> SObject:
        for key, obj in self.host.objects.items():
            if key.lower() == name.lower():
                return obj
        raise self.err(pos, "INVALID_TYPE", _NO_TYPE.format(t=name))

    def path(self, obj: SObject, ref: FieldRef) -> Path:
        parts = list(ref.path)
        # an optional leading object name qualifies the field (SELECT Event.Subject FROM Event)
        if len(parts) > 1 and parts[0].lower() == obj.name.lower() and obj.rel_lower.get(parts[0].lower()) is None:
            parts = parts[1:]
        lookups: list[Field] = []
        rels: list[str] = []
        cur: SObject | None = obj  # None => the polymorphic Name entity
        for part in parts[:-1]:
            if cur is None:
                raise self.err(ref.pos, "INVALID_FIELD", _NO_REL.format(r=part))
            f = cur.rel_lower.get(part.lower())
            if f is None:
                raise self.err(ref.pos, "INVALID_FIELD", _NO_REL.format(r=part))
            lookups.append(f)
            rels.append(f.relationship or part)
            if f.polymorphic:
                cur = None
            else:
                cur = self.host.objects.get(f.reference_to[0])
                if cur is None:
                    raise self.err(ref.pos, "INVALID_FIELD", _NO_REL.format(r=part))
        last = parts[-1]
        if cur is None:
            for nf in NAME_FIELDS:
                if nf.lower() == last.lower():
                    ftype = {"Id": "id", "IsActive": "boolean"}.get(nf, "string")
                    return Path(lookups, None, nf, rels, ftype)
            raise self.err(ref.pos, "INVALID_FIELD", _NO_COLUMN.format(f=last, e="Name"))
        f = cur.field(last)
        if f is None:
            raise self.err(ref.pos, "INVALID_FIELD", _NO_COLUMN.format(f=last, e=cur.name))
        return Path(lookups, f, f.name, rels, f.type)

    # conditions compile to closures over the raw record dicts
    def cond(self, obj: SObject, node: Any) -> Callable[[dict], bool]:
        if isinstance(node, BoolOp):
            parts = [self.cond(obj, i) for i in node.items]
            if node.op == "AND":
                return lambda r: all(p(r) for p in parts)
            return lambda r: any(p(r) for p in parts)
        if isinstance(node, Not):
            inner = self.cond(obj, node.item)
            return lambda r: not inner(r)
        assert isinstance(node, Cmp)
        path = self.path(obj, node.ref)
        if path.leaf is not None and not path.leaf.filterable:
            raise self.err(node.ref.pos, "INVALID_FIELD",
                           f"field '{path.leaf.name}' can not be filtered in a query call")
        get = self.getter(path)
        ftype = path.ftype
        if node.op in ("in", "notin"):
            vals = {_key(self.coerce(path, v, ftype)) for v in node.value}
            if node.op == "in":
                return lambda r: _key(get(r)) in vals
            return lambda r: _key(get(r)) not in vals
        if node.op == "like":
            v = node.value
            if ftype not in ("string", "email", "picklist", "textarea") or v.kind != "string":
                raise self.err(v.pos, "INVALID_FIELD", f"invalid operator on field '{path.leaf_name}': LIKE")
            rx = _like_regex(v.value)
            return lambda r: (lambda x: x is not None and rx.match(str(x)) is not None)(get(r))
        value = self.coerce(path, node.value, ftype)
        op = node.op
        if value is None:
            if op == "=":
                return lambda r: get(r) is None
            if op == "!=":
                return lambda r: get(r) is not None
            raise self.err(node.value.pos, "MALFORMED_QUERY", f"invalid operator on null: {op}")
        key = _key(value)
        if op == "=":
            return lambda r: _key(get(r)) == key
        if op == "!=":
            return lambda r: _key(get(r)) != key
        if ftype in ("boolean", "id", "reference"):
            raise self.err(node.value.pos, "INVALID_FIELD", f"invalid operator on {ftype} field: {op}")
        cmp = {"<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}[op]
        return lambda r: (lambda x: x is not None and cmp(_key(x), key))(get(r))

    def coerce(self, path: Path, v: Value, ftype: str) -> Any:
        if v.kind == "null":
            return None
        name = path.leaf_name

        def typed(expected: str) -> SoqlError:
            return self.err(v.pos, "INVALID_FIELD",
                            f"value of filter criterion for field '{name}' must be of type {expected} "
                            "and should not be enclosed in quotes")

        if ftype == "datetime":
            if v.kind != "datetime":
                raise typed("dateTime")
            return v.value
        if ftype == "date":
            if v.kind != "date":
                raise typed("date")
            return v.value
        if ftype == "boolean":
            if v.kind != "bool":
                raise typed("boolean")
            return v.value
        if ftype == "int":
            if v.kind != "number":
                raise typed("double")
            return v.value
        if ftype in ("id", "reference"):
            if v.kind != "string":
                raise self.err(v.pos, "INVALID_FIELD",
                               f"value of filter criterion for field '{name}' must be of type id and should be enclosed in quotes")
            full = ids.to18(v.value)
            if full is None:
                raise self.err(v.pos, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {v.value}")
            return full
        if v.kind != "string":
            raise self.err(v.pos, "INVALID_FIELD",
                           f"value of filter criterion for field '{name}' must be of type string and should be enclosed in quotes")
        return v.value

    def getter(self, path: Path) -> Callable[[dict], Any]:
        leaf = path.leaf_name
        if not path.lookups:
            return lambda r: r.get(leaf)
        host = self.host
        lookups = [f.name for f in path.lookups]

        def get(r: dict) -> Any:
            cur: dict | None = r
            typ = ""
            for ref in lookups:
                found = host.lookup(cur.get(ref)) if cur is not None else None
                if found is None:
                    return None
                typ, cur = found
            if leaf == "Type" and path.leaf is None:
                return typ
            return cur.get(leaf) if cur is not None else None

        return get


def _key(v: Any) -> Any:
    """Comparison key: strings compare case-insensitively, datetimes as instants."""
    if isinstance(v, str):
        return v.lower()
    return v


def _like_regex(pattern: str) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


# ---------------------------------------------------------------------------------------------- execute


def format_datetime(v: datetime) -> str:
    v = v.astimezone(timezone.utc)
    return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}+0000"


def wire(v: Any) -> Any:
    if isinstance(v, datetime):
        return format_datetime(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return list(v)
    return v


class Executor:
    def __init__(self, host: Host, version: str, include_deleted: bool) -> None:
        self.host = host
        self.version = version
        self.include_deleted = include_deleted

    def run(self, c: Compiled) -> tuple[int, list[dict]]:
        rows = self.select_rows(c, self.host.rows(c.obj.name, self.include_deleted))
        if c.count_only:
            return len(rows), []
        return len(rows), [self.serialize(c, r) for r in rows]

    def select_rows(self, c: Compiled, rows: Iterable[dict]) -> list[dict]:
        where = c.where
        out = [r for r in rows if where is None or where(r)]
        if c.order:
            comp = Compiler("", self.host)
            for path, desc, nulls_last in reversed(c.order):
                get = comp.getter(path)
                present = [r for r in out if get(r) is not None]
                missing = [r for r in out if get(r) is None]
                present.sort(key=lambda r: _key(get(r)), reverse=desc)
                out = present + missing if nulls_last else missing + present
        if c.offset:
            out = out[c.offset :]
        if c.limit is not None:
            out = out[: c.limit]
        return out

    def serialize(self, c: Compiled, r: dict) -> dict:
        typ = c.obj.name
        rid = r.get("Id")
        rec: dict[str, Any] = {
            "attributes": {"type": typ, "url": f"/services/data/v{self.version}/sobjects/{typ}/{rid}"}
        }
        for col in c.columns:
            if isinstance(col, CompiledSub):
                kids = self.host.child_rows(col.rel, rid, self.include_deleted)
                kids = self.select_rows(col.query, kids)
                rec[col.rel.name] = (
                    {"totalSize": len(kids), "done": True,
                     "records": [self.serialize(col.query, k) for k in kids]}
                    if kids else None
                )
                continue
            if not col.lookups:
                rec[col.leaf_name] = wire(r.get(col.leaf_name))
                continue
            self._nest(rec, r, col)
        return rec

    def _nest(self, rec: dict, r: dict, path: Path) -> None:
        target = rec
        cur: dict | None = r
        for i, ref in enumerate(path.lookups):
            rel = path.rel_names[i]
            if rel in target and target[rel] is None:
                return
            found = self.host.lookup(cur.get(ref.name)) if cur is not None else None
            if found is None:
                target[rel] = None
                return
            typ, cur = found
            if rel not in target:
                shown = "Name" if ref.polymorphic else typ
                target[rel] = {"attributes": {"type": shown,
                                              "url": f"/services/data/v{self.version}/sobjects/{typ}/{cur['Id']}"}}
            target = target[rel]
        if path.leaf is None and path.leaf_name == "Type":
            target["Type"] = typ
        else:
            target[path.leaf_name] = wire(cur.get(path.leaf_name)) if cur is not None else None


def execute(text: str, host: Host, version: str, include_deleted: bool) -> tuple[int, list[dict]]:
    """Parse, check and run ``text``; returns (totalSize, serialized records)."""
    q = parse(text)
    compiled = Compiler(text, host).compile(q)
    return Executor(host, version, include_deleted).run(compiled)
