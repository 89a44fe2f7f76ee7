"""Notifications: a failed run, a refused user, a mailbox that cannot be read, sent through a Prefect
notification block.

The flow's state hooks (``on_failure``, ``on_completion``, ``on_crashed`` of ``flows.sync.sync_flow``) call
``state_hook`` when the run ends, in every mode (a temporary server, ``calsync deploy``, your own server):
Prefect automations would need a server with its event services running when the run ends, which a
temporary server is not. ``calsync sync --no-prefect`` sends the same messages through the same blocks.

The config's ``[notify]`` names the block (docs/config.md):

- ``webhook_url_env`` (or ``_block`` / ``_file``): a URL that gets a JSON POST ``{"subject": ..., "text": ...}``,
  through Prefect's ``CustomWebhookNotificationBlock``; the URL is a secret (a Slack or Teams webhook URL is
  one), so it is kept among the block's secrets and never printed;
- ``block = "slack-webhook/calsync-alerts"``: any saved Prefect notification block (Slack, Microsoft Teams,
  email, PagerDuty, a custom webhook), by its block type slug and name.

Messages name the run, the users and what to do; they carry no secret and no event detail beyond what the
summary shows (subjects never: failures name the event ids).
"""

from __future__ import annotations

import logging

from flows.summary import verdict

log = logging.getLogger("calsync.notify")

MAX_LINES = 20


def for_summary(summary: dict) -> tuple[str, str] | None:
    """(subject, body) for a finished run that needs attention, else None."""
    v = verdict(summary)
    if v.exit_code == 0:
        return None
    run_id = summary.get("run_id", "?")
    lines = [v.headline, ""]
    for user, u in summary["users"].items():
        if u["refused"]:
            lines.append(f"- {user}: refused ({u['refused_reason']}): {u['refused']}")
        for f in u["failed"]:
            lines.append(f"- {user}: {f['op']} on {f['side']} ({f['source_id'] or f['target_id']}) failed: {f['error']}")
    if len(lines) > MAX_LINES + 2:
        lines = lines[: MAX_LINES + 2] + [f"... and {len(lines) - MAX_LINES - 2} more: `calsync history --run {run_id}`"]
    store = summary.get("store")
    if store:
        lines += ["", f"store: {store}"]
    return f"calsync run {run_id}: {v.state_name.lower()}: {v.headline}", "\n".join(lines)


def for_error(exc: BaseException | str, run_id: str | None = None, stage: str | None = None) -> tuple[str, str]:
    """(subject, body) for a run that stopped with an error."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    text = " ".join(str(text).split())
    run_id = run_id or getattr(exc, "run_id", None)
    stage = stage or getattr(exc, "failed_stage", None)
    where = f"run {run_id}" if run_id else "a run"
    what = f" in {stage}" if stage else ""
    return f"calsync {where} failed{what}: {text[:200]}", f"calsync {where} failed{what}:\n{text}"


def _block(settings):
    """The notification block ``settings`` (``flows.config.NotifySettings``) names."""
    if settings.block:
        from prefect.blocks.core import Block

        return Block.load(settings.block)
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    return CustomWebhookNotificationBlock(
        name="calsync", url="{{webhook_url}}", method="POST",
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        secrets={"webhook_url": settings.webhook_url.get()},
    )


def send(settings, subject: str, body: str) -> bool:
    """Send one notification; never raises (a notification must not fail a run). Returns whether it went."""
    if settings is None:
        return False
    try:
        _block(settings).notify(body=body, subject=subject)
    except Exception as exc:  # reported, never raised
        # str(exc) of an HTTP error names the URL, which is a secret: the type is enough to act on.
        log.warning("could not send the notification through %s (%s); check [notify] in the config",
                    settings.describe(), type(exc).__name__)
        return False
    log.info("notification sent through %s: %s", settings.describe(), subject)
    return True


def state_hook(flow, flow_run, state) -> None:  # Prefect's hook signature
    """Prefect flow-run state hook: notify when the run failed, crashed, or refused or could not read a user."""
    try:
        from flows.config import load_config

        cfg = load_config(flow_run.parameters["config_path"])
        if cfg.notify is None:
            return
        try:
            data = state.result(raise_on_failure=False)
        except Exception as exc:  # a crashed run may have no result
            data = exc
        if isinstance(data, dict) and data.get("status") == "skipped":
            message = None  # the designed outcome: the next run picks it up
        elif isinstance(data, dict):
            message = for_summary(data)
        elif isinstance(data, BaseException):
            message = for_error(data)
        else:
            message = for_error(state.message or state.name)
        if message is not None:
            send(cfg.notify, *message)
    except Exception as exc:  # a hook must never fail
        log.warning("calsync notification hook failed (%s: %s)", type(exc).__name__, exc)
