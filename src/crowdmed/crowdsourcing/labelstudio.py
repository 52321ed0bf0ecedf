"""Label Studio projects: task export (tasks JSON + labeling config) and vote import.

The labeling config shows the RGB context crop and its blue-ratio view side by side with one
single-choice question (``mitosis`` / ``not mitosis``). Each task carries its package task id
in ``data.task`` so a Label Studio JSON export maps back to the package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from crowdmed.crowdsourcing.tasks import CLASS_NAMES

__all__ = ["labeling_config", "read_label_studio", "write_label_studio"]


def labeling_config() -> str:
    """The Label Studio labeling config (XML) of a mitosis task package.

    Examples:
        >>> 'value="mitosis"' in labeling_config()
        True
    """
    choices = "\n".join(f'    <Choice value="{name}"/>' for name in reversed(CLASS_NAMES))
    return (
        "<View>\n"
        '  <Header value="Is there a mitotic figure at the centre of the patch?"/>\n'
        '  <View style="display: flex; gap: 8px">\n'
        '    <Image name="patch" value="$image" zoom="true"/>\n'
        '    <Image name="blue_ratio" value="$blue_ratio" zoom="true"/>\n'
        "  </View>\n"
        '  <Choices name="label" toName="patch" choice="single" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def write_label_studio(
    package_dir: str | os.PathLike[str], tasks: Sequence[str], *, url_prefix: str = ""
) -> Path:
    """Write ``label_studio/tasks.json`` and ``label_studio/config.xml`` into a package folder.

    Args:
        package_dir: The (staged) package folder holding ``patches/`` and ``blue_ratio/``.
        tasks: Task ids in task order.
        url_prefix: Prefix of the image paths (paths are relative to the package folder).

    Returns:
        The ``label_studio`` folder.
    """
    folder = Path(package_dir) / "label_studio"
    folder.mkdir(exist_ok=True)
    records = [
        {
            "data": {
                "task": str(t),
                "image": f"{url_prefix}patches/{t}.png",
                "blue_ratio": f"{url_prefix}blue_ratio/{t}.png",
            }
        }
        for t in tasks
    ]
    (folder / "tasks.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    (folder / "config.xml").write_text(labeling_config(), encoding="utf-8")
    return folder


def _annotator_name(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return "" if who is None else str(who)


def _choice(annotation: dict[str, Any]) -> Any:
    for result in annotation.get("result") or []:
        if isinstance(result, dict) and result.get("type", "choices") == "choices":
            choices = (result.get("value") or {}).get("choices") or []
            if len(choices) == 1:
                return choices[0]
            return "|".join(map(str, choices)) if choices else None
    return None


def read_label_studio(source: str | os.PathLike[str] | list[Any]) -> pd.DataFrame:
    """Read a Label Studio JSON export as a vote table.

    Args:
        source: Path of the JSON export (``[{"data": {"task": ...}, "annotations": [...]}]``)
            or the parsed list.

    Returns:
        Table ``task, annotator, label, where`` with one row per (non-cancelled) annotation;
        ``where`` names its position (``"task 3, annotation 1"``, counted from 1) for error
        reports. ``annotator`` is the ``completed_by`` email or id; ``label`` the chosen
        value (``None`` when nothing was chosen).

    Raises:
        ValueError: If the file is not a Label Studio JSON export.
    """
    if isinstance(source, list):
        records = source
        origin = "the Label Studio export"
    else:
        path = Path(source)
        if path.is_dir():
            raise ValueError(f"'{path}' is a folder; give the Label Studio JSON export file.")
        if not path.is_file():
            raise ValueError(f"'{path}' does not exist; give the Label Studio JSON export file.")
        try:
            # utf-8-sig: a byte-order mark written by some editors is not part of the JSON.
            records = json.loads(path.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"'{path}' is not UTF-8 text (byte {exc.start}); export JSON from Label Studio."
            ) from None
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"'{path}' is not valid JSON ({exc}); export JSON from Label Studio."
            ) from None
        origin = f"'{path}'"
    if not isinstance(records, list):
        raise ValueError(
            f"{origin} must be a list of tasks (Label Studio 'JSON' export); got "
            f"{type(records).__name__}."
        )
    rows = []
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, dict) or not isinstance(rec.get("data"), dict):
            raise ValueError(
                f"{origin}: task {i} has no 'data' object; is this a Label Studio JSON export?"
            )
        task = rec["data"].get("task")
        for j, ann in enumerate(rec.get("annotations") or [], start=1):
            if not isinstance(ann, dict) or ann.get("was_cancelled"):
                continue
            rows.append(
                {
                    "task": None if task is None else str(task),
                    "annotator": _annotator_name(ann),
                    "label": _choice(ann),
                    "where": f"task {i}, annotation {j}",
                }
            )
    return pd.DataFrame(rows, columns=["task", "annotator", "label", "where"])
