"""Time zones as Exchange names them: IANA <-> Windows ids, and TimeZoneDefinition XML.

Exchange identifies time zones by their Windows registry id ("W. Europe Standard Time") and, from
Exchange 2010 on, returns a full TimeZoneDefinition (Periods / TransitionsGroups / Transitions) in
StartTimeZone / EndTimeZone. Element shape:
https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/starttimezone
(Periods, TransitionsGroups, Transitions; attributes Id and Name).

Only the zones calsync needs are mapped. A zone id we do not know is kept verbatim (so bad data can be
seeded) and computed as UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone, tzinfo
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class WinZone:
    ms_id: str
    name: str
    iana: str
    std_bias_min: int  # Windows bias: UTC = local + bias (Berlin: -60)
    # Daylight rule: (dlt_bias_min, (month, weekday, occurrence, hh) start, (month, weekday, occurrence, hh) end)
    dst: tuple | None = None


_SUN = "Sunday"
ZONES: tuple[WinZone, ...] = (
    WinZone("UTC", "(UTC) Coordinated Universal Time", "UTC", 0),
    WinZone(
        "W. Europe Standard Time",
        "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",
        "Europe/Berlin",
        -60,
        (-120, (3, _SUN, -1, 2), (10, _SUN, -1, 3)),
    ),
    WinZone(
        "Romance Standard Time",
        "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris",
        "Europe/Paris",
        -60,
        (-120, (3, _SUN, -1, 2), (10, _SUN, -1, 3)),
    ),
    WinZone(
        "GMT Standard Time",
        "(UTC+00:00) Dublin, Edinburgh, Lisbon, London",
        "Europe/London",
        0,
        (-60, (3, _SUN, -1, 1), (10, _SUN, -1, 2)),
    ),
    WinZone(
        "Eastern Standard Time",
        "(UTC-05:00) Eastern Time (US & Canada)",
        "America/New_York",
        300,
        (240, (3, _SUN, 2, 2), (11, _SUN, 1, 2)),
    ),
    WinZone(
        "Central Standard Time",
        "(UTC-06:00) Central Time (US & Canada)",
        "America/Chicago",
        360,
        (300, (3, _SUN, 2, 2), (11, _SUN, 1, 2)),
    ),
    WinZone(
        "Pacific Standard Time",
        "(UTC-08:00) Pacific Time (US & Canada)",
        "America/Los_Angeles",
        480,
        (420, (3, _SUN, 2, 2), (11, _SUN, 1, 2)),
    ),
    WinZone("Tokyo Standard Time", "(UTC+09:00) Osaka, Sapporo, Tokyo", "Asia/Tokyo", -540),
    WinZone("India Standard Time", "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi", "Asia/Kolkata", -330),
    WinZone(
        "AUS Eastern Standard Time",
        "(UTC+10:00) Canberra, Melbourne, Sydney",
        "Australia/Sydney",
        -600,
        (-660, (10, _SUN, 1, 2), (4, _SUN, 1, 3)),
    ),
)
BY_MS_ID = {z.ms_id: z for z in ZONES}
BY_IANA = {z.iana: z for z in ZONES}
BY_IANA["Etc/UTC"] = BY_IANA["UTC"]
BY_IANA["GMT"] = BY_IANA["UTC"]


def ms_id_for(name: str) -> str:
    """Windows id for an IANA name (or a Windows id given as is). Unknown names are kept verbatim."""
    if name in BY_MS_ID:
        return name
    zone = BY_IANA.get(name)
    return zone.ms_id if zone else name


def is_known(ms_id: str) -> bool:
    return ms_id in BY_MS_ID


def tzinfo_for(ms_id: str | None) -> tzinfo:
    """The tzinfo to compute local dates with; unknown ids compute as UTC."""
    zone = BY_MS_ID.get(ms_id or "UTC")
    if zone is None or zone.iana == "UTC":
        return timezone.utc
    return ZoneInfo(zone.iana)


def _duration(minutes: int) -> str:
    """xs:duration as Exchange writes biases: -PT1H, PT5H, -PT5H30M, PT0H."""
    sign = "-" if minutes < 0 else ""
    minutes = abs(minutes)
    h, m = divmod(minutes, 60)
    return f"{sign}PT{h}H{m}M" if m else f"{sign}PT{h}H"


_DEF_CACHE: dict[tuple[str, str], str] = {}


def definition_xml(tag: str, ms_id: str) -> str:
    """A <t:{tag}> TimeZoneDefinition element as Exchange 2010+ returns it."""
    key = (tag, ms_id)
    cached = _DEF_CACHE.get(key)
    if cached is not None:
        return cached
    zone = BY_MS_ID.get(ms_id)
    if zone is None:
        # Unknown zone (seeded bad data): Exchange would echo what is stored; we keep only the id.
        out = f"<t:{tag} Id={quoteattr(ms_id)}/>"
        _DEF_CACHE[key] = out
        return out
    rule = f"trule:Microsoft/Registry/{zone.ms_id}/2006"
    std_id, dlt_id = f"{rule}-Standard", f"{rule}-Daylight"
    periods = f'<t:Period Bias="{_duration(zone.std_bias_min)}" Name="Standard" Id={quoteattr(std_id)}/>'
    if zone.dst is None:
        group = f'<t:Transition><t:To Kind="Period">{_x(std_id)}</t:To></t:Transition>'
    else:
        dlt_bias, (m1, d1, o1, h1), (m2, d2, o2, h2) = zone.dst
        periods += f'<t:Period Bias="{_duration(dlt_bias)}" Name="Daylight" Id={quoteattr(dlt_id)}/>'
        group = (
            f'<t:RecurringDayTransition><t:To Kind="Period">{_x(dlt_id)}</t:To>'
            f"<t:TimeOffset>PT{h1}H</t:TimeOffset><t:Month>{m1}</t:Month>"
            f"<t:DayOfWeek>{d1}</t:DayOfWeek><t:Occurrence>{o1}</t:Occurrence></t:RecurringDayTransition>"
            f'<t:RecurringDayTransition><t:To Kind="Period">{_x(std_id)}</t:To>'
            f"<t:TimeOffset>PT{h2}H</t:TimeOffset><t:Month>{m2}</t:Month>"
            f"<t:DayOfWeek>{d2}</t:DayOfWeek><t:Occurrence>{o2}</t:Occurrence></t:RecurringDayTransition>"
        )
    out = (
        f"<t:{tag} Id={quoteattr(zone.ms_id)} Name={quoteattr(zone.name)}>"
        f"<t:Periods>{periods}</t:Periods>"
        f'<t:TransitionsGroups><t:TransitionsGroup Id="0">{group}</t:TransitionsGroup></t:TransitionsGroups>'
        f'<t:Transitions><t:Transition><t:To Kind="Group">0</t:To></t:Transition></t:Transitions>'
        f"</t:{tag}>"
    )
    _DEF_CACHE[key] = out
    return out


def _x(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
