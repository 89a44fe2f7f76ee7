"""The sObject schema the sandbox serves: Event, EventRelation, EventWhoRelation, Contact, Lead, User.

Field lists and properties follow the Object Reference:
- Event: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_event.htm
  (Description "Limit: 32,000 characters"; Subject/Location 255; EventWhoIds only with Shared Activities)
- EventRelation: https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_eventattendee.htm
  (Status picklist New/Accepted/Declined; IsParent/IsWhat only with Shared Activities)
- EventWhoRelation: https://developer.salesforce.com/docs/atlas.en-us.192.0.object_reference.meta/object_reference/sforce_api_objects_eventwhorelation.htm
  (derived, read-only: describeSObjects(), query(), retrieve(); only with Shared Activities)
- Field sizes: https://developer.salesforce.com/docs/atlas.en-us.sfFieldRef.meta/sfFieldRef/salesforce_field_reference_Event.htm
  (IsRecurrence "Create Recurring Series of Events", RecurrenceActivityId, the Recurrence* pattern fields,
  IsRecurrence2, IsRecurrence2Exception, IsRecurrence2Exclusion, Recurrence2Pattern*)

The schema depends on two org switches (Shared Activities, the required custom field), so it is built
per call from those settings; ``Schema`` objects are cheap and cached by the org.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import recurrence

PREFIX = {
    "Event": "00U",
    "EventRelation": "0RE",
    "EventWhoRelation": "0RE",  # derived from EventRelation: same records, same ids
    "Contact": "003",
    "Lead": "00Q",
    "User": "005",
}
TYPE_BY_PREFIX = {"00U": "Event", "0RE": "EventRelation", "003": "Contact", "00Q": "Lead", "005": "User"}

# The polymorphic "Name" entity behind Who, What, Owner (Event) and Relation lookups
# (https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_relationships_and_polymorph_keys.htm)
NAME_FIELDS = ("Id", "Name", "Email", "Type", "FirstName", "LastName", "Alias", "IsActive", "Username", "Title")


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # id, string, textarea, email, datetime, date, int, boolean, reference, picklist, junctionidlist
    length: int = 0
    nillable: bool = True
    createable: bool = False
    updateable: bool = False
    custom: bool = False
    defaulted: bool = False
    filterable: bool = True
    sortable: bool = True
    reference_to: tuple[str, ...] = ()
    relationship: str | None = None
    picklist: tuple[str, ...] = ()
    picklist_default: str | None = None
    restricted: bool = False
    label: str = ""

    @property
    def polymorphic(self) -> bool:
        return len(self.reference_to) > 1

    def describe(self) -> dict:
        soap = {
            "id": "tns:ID", "reference": "tns:ID", "string": "xsd:string", "textarea": "xsd:string",
            "email": "xsd:string", "picklist": "xsd:string", "datetime": "xsd:dateTime", "date": "xsd:date",
            "int": "xsd:int", "boolean": "xsd:boolean", "junctionidlist": "tns:ID",
        }[self.type]
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "soapType": soap,
            "length": self.length,
            "byteLength": self.length * 3,
            "digits": 9 if self.type == "int" else 0,
            "precision": 0,
            "scale": 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "custom": self.custom,
            "defaultedOnCreate": self.defaulted,
            "filterable": self.filterable,
            "sortable": self.sortable,
            "groupable": self.filterable and self.type not in ("textarea", "datetime"),
            "calculated": False,
            "unique": False,
            "externalId": False,
            "idLookup": self.type == "id",
            "nameField": self.name == "Name" or (self.name == "Subject"),
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship,
            "polymorphicForeignKey": self.polymorphic,
            "cascadeDelete": False,
            "restrictedPicklist": self.restricted,
            "defaultValue": None,
            "picklistValues": [
                {"active": True, "defaultValue": v == self.picklist_default, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
        }


@dataclass(frozen=True)
class Child:
    name: str  # relationship name, e.g. EventRelations
    sobject: str  # child object
    field: str  # the child's reference field, e.g. EventId


@dataclass
class SObject:
    name: str
    fields: dict[str, Field]
    children: dict[str, Child] = field(default_factory=dict)
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        self.lower = {k.lower(): f for k, f in self.fields.items()}
        self.child_lower = {k.lower(): c for k, c in self.children.items()}
        self.rel_lower = {f.relationship.lower(): f for f in self.fields.values() if f.relationship}

    def field(self, name: str) -> Field | None:
        return self.lower.get(name.lower())

    def describe(self, version: str) -> dict:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label or self.name,
            "labelPlural": (self.label or self.name) + "s",
            "keyPrefix": PREFIX[self.name],
            "custom": False,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "queryable": True,
            "retrieveable": True,
            "searchable": self.name != "EventWhoRelation",
            "undeletable": self.deletable,
            "triggerable": self.name not in ("EventRelation", "EventWhoRelation"),
            "fields": [f.describe() for f in self.fields.values()],
            "childRelationships": [
                {"childSObject": c.sobject, "field": c.field, "relationshipName": c.name,
                 "cascadeDelete": True, "deprecatedAndHidden": False, "restrictedDelete": False}
                for c in self.children.values()
            ],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _audit(fields: dict[str, Field]) -> None:
    for name, ftype in (
        ("IsDeleted", "boolean"), ("CreatedDate", "datetime"), ("CreatedById", "reference"),
        ("LastModifiedDate", "datetime"), ("LastModifiedById", "reference"), ("SystemModstamp", "datetime"),
    ):
        fields[name] = Field(
            name, ftype, nillable=False, defaulted=True,
            reference_to=("User",) if ftype == "reference" else (),
            relationship=name[:-2] if ftype == "reference" else None,
        )


def _f(*items: Field) -> dict[str, Field]:
    return {f.name: f for f in items}


def build(shared_activities: bool, custom_field: str | None) -> dict[str, SObject]:
    """The org's objects for the given switches."""
    W = dict(createable=True, updateable=True)

    ev = _f(
        Field("Id", "id", 18, nillable=False, defaulted=True, label="Activity ID"),
        Field("Subject", "string", 255, label="Subject", **W),  # combobox in the real org
        Field("StartDateTime", "datetime", label="Start Date Time", **W),
        Field("EndDateTime", "datetime", label="End Date Time", **W),
        Field("ActivityDateTime", "datetime", label="Due Date Time", **W),
        Field("ActivityDate", "date", label="Due Date Only", **W),
        Field("EndDate", "date", label="End Date"),
        Field("DurationInMinutes", "int", label="Duration", **W),
        Field("IsAllDayEvent", "boolean", nillable=False, defaulted=True, label="All-Day Event", **W),
        Field("Description", "textarea", 32000, filterable=False, sortable=False, label="Description", **W),
        Field("Location", "string", 255, label="Location", **W),
        Field("ShowAs", "picklist", 40, picklist=("Busy", "OutOfOffice", "Free"), picklist_default="Busy",
              defaulted=True, restricted=True, label="Show Time As", **W),
        Field("IsPrivate", "boolean", nillable=False, defaulted=True, label="Private", **W),
        Field("OwnerId", "reference", 18, nillable=False, defaulted=True, reference_to=("Calendar", "User"),
              relationship="Owner", label="Assigned To ID", **W),
        Field("WhoId", "reference", 18, reference_to=("Contact", "Lead"), relationship="Who", label="Name ID", **W),
        Field("WhatId", "reference", 18, reference_to=("Account", "Opportunity"), relationship="What",
              label="Related To ID", **W),
        Field("IsChild", "boolean", nillable=False, defaulted=True, label="Is Child"),
        Field("IsGroupEvent", "boolean", nillable=False, defaulted=True, label="Is Group Event"),
        # 0 non-group, 1 group event, 2 proposed event, 3 the record of an event series' pattern
        Field("GroupEventType", "picklist", 40, picklist=("0", "1", "2", "3"), restricted=True, label="Group Event Type"),
        Field("IsReminderSet", "boolean", nillable=False, defaulted=True, label="Reminder Set", **W),
        Field("ReminderDateTime", "datetime", label="Reminder Date/Time", **W),
        # Recurring events (see sandbox/salesforce/recurrence.py). Classic: the series master has IsRecurrence and
        # the pattern, each occurrence row the master's id in RecurrenceActivityId.
        Field("IsRecurrence", "boolean", nillable=False, defaulted=True, createable=True,
              label="Create Recurring Series of Events"),
        Field("RecurrenceActivityId", "reference", 18, reference_to=("Event",), relationship="RecurrenceActivity",
              label="Recurrence Activity ID"),
        Field("RecurrenceStartDateTime", "datetime", label="Recurrence Start", **W),
        Field("RecurrenceEndDateOnly", "date", label="Recurrence End", **W),
        Field("RecurrenceType", "picklist", 40, picklist=recurrence.CLASSIC_TYPES, restricted=True,
              label="Recurrence Type", **W),
        Field("RecurrenceInterval", "int", label="Recurrence Interval", **W),
        Field("RecurrenceDayOfWeekMask", "int", label="Recurrence Day of Week Mask", **W),
        Field("RecurrenceDayOfMonth", "int", label="Recurrence Day of Month", **W),
        Field("RecurrenceInstance", "picklist", 40, picklist=recurrence.INSTANCES, restricted=True,
              label="Recurrence Instance", **W),
        Field("RecurrenceMonthOfYear", "picklist", 40, picklist=recurrence.MONTHS, restricted=True,
              label="Recurrence Month of Year", **W),
        Field("RecurrenceTimeZoneSidKey", "picklist", 40, label="Recurrence Time Zone", **W),
        # Lightning Experience event series: every event of the series has IsRecurrence2 and the RRULE; the
        # series record that represents the pattern has GroupEventType 3.
        Field("IsRecurrence2", "boolean", nillable=False, defaulted=True, createable=True, label="Repeat"),
        Field("IsRecurrence2Exception", "boolean", nillable=False, defaulted=True, label="Is Exception"),
        Field("IsRecurrence2Exclusion", "boolean", nillable=False, defaulted=True,
              label="Historical Event, Not Following Recurrence"),
        Field("Recurrence2PatternText", "string", 1300, createable=True, label="Recurrence Pattern"),
        Field("Recurrence2PatternStartDate", "datetime", label="Recurrence Pattern Start Date"),
        Field("Recurrence2PatternTimeZone", "string", 255, createable=True, label="Recurrence Pattern Time Zone"),
        Field("Recurrence2PatternVersion", "picklist", 40, picklist=("1", "2"), restricted=True, label="Pattern Version"),
    )
    if shared_activities:
        ev["EventWhoIds"] = Field("EventWhoIds", "junctionidlist", 18, createable=True, updateable=True,
                                  filterable=False, sortable=False, reference_to=("Contact", "Lead"),
                                  label="Event Who Ids")
    if custom_field:
        ev[custom_field] = Field(custom_field, "string", 255, nillable=False, custom=True, label=custom_field[:-3], **W)
    _audit(ev)
    ev_children = {"EventRelations": Child("EventRelations", "EventRelation", "EventId")}
    if shared_activities:
        ev_children["EventWhoRelations"] = Child("EventWhoRelations", "EventWhoRelation", "EventId")

    er = _f(
        Field("Id", "id", 18, nillable=False, defaulted=True, label="Event Relation ID"),
        Field("EventId", "reference", 18, nillable=False, createable=True, reference_to=("Event",),
              relationship="Event", label="Event ID"),
        Field("RelationId", "reference", 18, nillable=False, createable=True,
              reference_to=("Contact", "Lead", "User", "Calendar"), relationship="Relation", label="Relation ID"),
        Field("IsInvitee", "boolean", nillable=False, defaulted=True, label="Is Invitee", **W),
        Field("Status", "picklist", 40, picklist=("New", "Declined", "Accepted"), picklist_default="New",
              defaulted=True, restricted=True, label="Status", **W),
        Field("RespondedDate", "datetime", label="Response Date", **W),
        Field("Response", "string", 255, label="Response", **W),
    )
    if shared_activities:
        er["IsParent"] = Field("IsParent", "boolean", nillable=False, defaulted=True, label="Is Parent", **W)
        er["IsWhat"] = Field("IsWhat", "boolean", nillable=False, defaulted=True, label="Is What", createable=True)
    _audit(er)

    ewr = _f(
        Field("Id", "id", 18, nillable=False, defaulted=True),
        Field("EventId", "reference", 18, reference_to=("Event",), relationship="Event", label="Event ID"),
        Field("RelationId", "reference", 18, reference_to=("Contact", "Lead"), relationship="Relation",
              label="Relation ID"),
        Field("Type", "string", 255, label="Type"),
    )
    _audit(ewr)

    def person(extra: tuple[Field, ...], owner: bool) -> dict[str, Field]:
        fs = _f(
            Field("Id", "id", 18, nillable=False, defaulted=True),
            Field("FirstName", "string", 40, **W),
            Field("LastName", "string", 80, nillable=False, **W),
            Field("Name", "string", 121, label="Full Name"),
            Field("Email", "email", 80, **W),
            *extra,
        )
        if owner:
            fs["OwnerId"] = Field("OwnerId", "reference", 18, nillable=False, defaulted=True, reference_to=("User",),
                                  relationship="Owner", label="Owner ID", **W)
        _audit(fs)
        return fs

    contact = person((), owner=True)
    lead = person((Field("Company", "string", 255, nillable=False, **W),
                   Field("IsConverted", "boolean", nillable=False, defaulted=True)), owner=True)
    user = person((Field("Username", "string", 80, nillable=False),
                   Field("Alias", "string", 8),
                   Field("IsActive", "boolean", nillable=False, defaulted=True)), owner=False)
    user.pop("IsDeleted", None)  # User records are deactivated, never deleted

    objs = {
        "Event": SObject("Event", ev, ev_children, label="Event"),
        "EventRelation": SObject("EventRelation", er, label="Event Relation"),
        "Contact": SObject("Contact", contact, label="Contact"),
        "Lead": SObject("Lead", lead, label="Lead"),
        "User": SObject("User", user, createable=False, deletable=False, updateable=False, label="User"),
    }
    if shared_activities:
        objs["EventWhoRelation"] = SObject("EventWhoRelation", ewr, createable=False, updateable=False,
                                           deletable=False, label="Event Who Relation")
    return objs
