"""What a member's client sends when it submits a modal: every field the bot's modal (type 9 answer)
holds, in its order, as Discord shapes them (`ModalSubmit…InteractionData`): text inputs with their
value, selects and file uploads with their values, each inside its row (type 1) or label (type 18).

A field the test does not fill keeps what the modal pre-filled (a text input's `value`); the client's
own checks are kept too: a required field left empty, a text outside its lengths or a choice not
offered is refused with a `LoopbackError`, as Discord's client would not send it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .models import LoopbackError, Upload

JSON = dict[str, Any]
FieldValue = str | list[str] | list[Upload]
NewAttachment = Callable[[Upload], JSON]  # an uploaded file → its attachment payload (with its id)


def modal_submission(modal: JSON, values: Mapping[str, FieldValue], new_attachment: NewAttachment) -> JSON:
    """The MODAL_SUBMIT `data` for `modal` filled with `values` (by custom_id)."""
    unknown = set(values) - set(_custom_ids(modal))
    if unknown:
        raise LoopbackError(f"the modal has no field {sorted(unknown)}: {_custom_ids(modal)}")
    resolved: JSON = {}
    rows = []
    for top in modal.get("components") or []:
        if top.get("type") == 1:
            inner = [_submitted(c, values, new_attachment, resolved) for c in top.get("components") or []]
            rows.append({"type": 1, "components": inner})
        elif top.get("type") == 18:
            rows.append(
                {
                    "type": 18,
                    "id": top.get("id"),
                    "component": _submitted(top["component"], values, new_attachment, resolved),
                }
            )
    data: JSON = {"custom_id": modal.get("custom_id"), "components": rows}
    if resolved:
        data["resolved"] = {"attachments": resolved}
    return data


def _custom_ids(modal: JSON) -> list[str]:
    found = []
    for top in modal.get("components") or []:
        inner = top.get("components") or [top["component"]] if top.get("type") in (1, 18) else []
        found += [str(c["custom_id"]) for c in inner if "custom_id" in c]
    return found


def _submitted(
    component: JSON, values: Mapping[str, FieldValue], new_attachment: NewAttachment, resolved: JSON
) -> JSON:
    ctype, custom_id = component.get("type"), str(component.get("custom_id"))
    given = values.get(custom_id)
    required = component.get("required", True) is not False
    if ctype == 4:  # text input
        text = str(given) if given is not None else str(component.get("value") or "")
        low, high = int(component.get("min_length") or 0), int(component.get("max_length") or 4000)
        if (required and not text) or (text and not low <= len(text) <= high):
            raise LoopbackError(
                f"field {custom_id!r}: {len(text)} characters, allowed {low}–{high} (required={required})"
            )
        return {"type": 4, "custom_id": custom_id, "value": text}
    if ctype == 3:  # string select
        chosen = [str(v) for v in (given or [])]
        offered = {str(o["value"]) for o in component.get("options") or []}
        low = int(component.get("min_values", 1) if component.get("min_values") is not None else 1)
        high = int(component.get("max_values") or 1)
        if not set(chosen) <= offered:
            raise LoopbackError(f"field {custom_id!r}: {sorted(set(chosen) - offered)} not offered")
        if (chosen or required) and not low <= len(chosen) <= high:
            raise LoopbackError(f"field {custom_id!r}: {len(chosen)} chosen, allowed {low}–{high}")
        return {"type": 3, "custom_id": custom_id, "values": chosen}
    if ctype == 19:  # file upload
        files = list(given or [])
        if not all(isinstance(f, Upload) for f in files):
            raise LoopbackError(f"field {custom_id!r} takes Upload files")
        high = int(component.get("max_values") or 1)
        if (required and not files) or len(files) > high:
            raise LoopbackError(
                f"field {custom_id!r}: {len(files)} files, at most {high} (required={required})"
            )
        ids = []
        for upload in files:
            assert isinstance(upload, Upload)
            attachment = new_attachment(upload)
            resolved[str(attachment["id"])] = attachment
            ids.append(str(attachment["id"]))
        return {"type": 19, "custom_id": custom_id, "values": ids}
    raise LoopbackError(f"the loopback cannot submit a component of type {ctype}")
