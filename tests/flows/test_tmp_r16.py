from tests.flows.test_rules_e2e import *
def test_x(world):
    world.configure(user_block(ALICE))
    ex = world.sb.exchange.org
    ex.add_item(ALICE, "Paired before", at(2, 9), at(2, 10))
    world.sync()
    world.sb.salesforce.org.set_required_custom_field("Region__c")
    acct = world.account(ALICE)
    item = next(i for i in acct.calendar.all() if i.subject == "Paired before")
    item.subject = "Paired before (edited)"
    item.save(update_fields=["subject"])
    s = world.sync()
    import json; print(json.dumps(s, indent=1, default=str))
    print(world.query("select op, target_side, reason from deltas"))
    assert 0
