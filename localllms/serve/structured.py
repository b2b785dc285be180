"""Structured output: the same extraction unconstrained, under a JSON grammar, and under a JSON schema.

Each reply is checked strictly (``json.loads`` of the whole reply, then ``jsonschema``), and for the
one fact a correct extraction must get right (the time), since schema validity does not check meaning.
``failure_table`` sorts every reply into one cause (cut off at ``max_tokens``, ended but not JSON,
ended as JSON outside the schema, valid with the wrong time, correct) and ``structured_reading``
says in sentences what the table shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..build import BuildInfo, current_build, llama_cpp_source
from ..errors import UserError
from .clients import Endpoint, chat_requests

if TYPE_CHECKING:
    from .process import ManagedServer


EXTRACTION_SYSTEM = (
    "Extract the appointment from the user's message. Reply with only a JSON object with the keys "
    '"title" (a short string), "time" (24-hour "HH:MM") and "participants" (a list of names).'
)

# prompt -> the time a correct extraction contains (schema validity does not check meaning)
EXTRACTION_PROMPTS: dict[str, str] = {
    "Schedule a call at 8pm.": "20:00",
    "Schedule a call with Anna at 8pm.": "20:00",
    "Book a meeting with Tom and Lisa at 9am.": "09:00",
    "Remind me to call the dentist at 3:30pm.": "15:30",
    "Set up lunch with Maria at noon.": "12:00",
    "Arrange a video call with the Berlin office at 6pm.": "18:00",
    "Team standup tomorrow at 10am with Sam, Priya and Jo.": "10:00",
    "Dinner with my parents at 7:30pm on Friday.": "19:30",
    "Please put a budget review with Carlos at 14:00 in my calendar.": "14:00",
    "Coffee with Elena at 8:15am.": "08:15",
    "Interview the new candidate with Mark at 11am.": "11:00",
    "Call the plumber at 4pm.": "16:00",
}

EXTRACTION_SCHEMA: dict = {
    "type": "object",
    "properties": {
        # length bounds keep a constrained reply finite: a small model otherwise repeats list items
        "title": {"type": "string", "minLength": 1, "maxLength": 40},
        "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
        "participants": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 4},
    },
    "required": ["title", "time", "participants"],
    "additionalProperties": False,
}

STRUCTURED_MODES = ("unconstrained", "json_grammar", "json_schema")


def json_grammar_path(build: BuildInfo | None = None) -> Path:
    """llama.cpp's generic JSON GBNF grammar, from the source tree this build was compiled from."""
    build = build or current_build()
    path = llama_cpp_source(build) / "grammars" / "json.gbnf"
    if not path.exists():
        raise UserError(f"{path} is missing from the llama.cpp source tree; run `make setup` to unpack it again.")
    return path


def check_json(text: str, schema: dict = EXTRACTION_SCHEMA) -> tuple[bool, bool, str]:
    """(parses, validates, reason): strict ``json.loads`` of the whole reply, then ``jsonschema``."""
    import jsonschema

    try:
        obj = json.loads(text)
    except ValueError as exc:
        return False, False, f"not JSON: {exc.msg}"
    try:
        jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as exc:
        return True, False, f"schema: {exc.message[:80]}"
    return True, True, ""


def structured_output(
    target: ManagedServer | Endpoint,
    prompts: Sequence[str] | None = None,
    modes: Sequence[str] = STRUCTURED_MODES,
    max_tokens: int = 256,
    schema: dict = EXTRACTION_SCHEMA,
    build: BuildInfo | None = None,
):
    """Run each prompt in each mode (greedy), and check the reply parses and validates against the schema."""
    import pandas as pd

    grammar = json_grammar_path(build).read_text() if "json_grammar" in modes else None
    prompts = list(prompts or EXTRACTION_PROMPTS)
    unknown = [p for p in prompts if p not in EXTRACTION_PROMPTS]
    if unknown:
        raise UserError(f"No expected time is known for {unknown[0]!r}; add it to EXTRACTION_PROMPTS first.")
    rows = []
    for mode in modes:
        if mode == "unconstrained":
            extra: dict = {}
        elif mode == "json_grammar":
            extra = {"grammar": grammar}  # llama.cpp extension: a GBNF grammar constrains sampling
        elif mode == "json_schema":
            extra = {
                "response_format": {"type": "json_schema", "json_schema": {"name": "appointment", "schema": schema}}
            }
        else:
            raise UserError(f"Unknown structured-output mode {mode!r}; use one of {', '.join(STRUCTURED_MODES)}.")
        for prompt in prompts:
            messages = [{"role": "system", "content": EXTRACTION_SYSTEM}, {"role": "user", "content": prompt}]
            res = chat_requests(target, messages, max_tokens=max_tokens, **extra)
            parses, valid, reason = check_json(res.content, schema)
            time_ok = valid and json.loads(res.content).get("time") == EXTRACTION_PROMPTS.get(prompt)
            rows.append(
                {
                    "mode": mode,
                    "prompt": prompt,
                    "reply": res.content,
                    "finish_reason": res.finish_reason,
                    "completion_tokens": int(res.usage.get("completion_tokens", 0)),
                    "parses": parses,
                    "valid": valid,
                    "time_correct": bool(time_ok),
                    "reason": reason,
                }
            )
    return pd.DataFrame(rows)


def validity_table(df, digits: int = 2):
    """Share of replies that parse as JSON and that validate against the schema, per mode."""
    out = df.groupby("mode", sort=False).agg(
        requests=("valid", "size"),
        parses_share=("parses", "mean"),
        valid_share=("valid", "mean"),
        time_correct_share=("time_correct", "mean"),
    )
    return out.round(digits)


CAUSES = (
    "correct",
    "valid, wrong time",
    "cut off at max_tokens",
    "ended, not JSON",
    "ended, JSON outside the schema",
)


def failure_cause(row) -> str:
    """The one cause a reply falls under (see ``CAUSES``): valid ones by their time, the others by how they ended."""
    if row["valid"]:
        return CAUSES[0] if row["time_correct"] else CAUSES[1]
    if row["finish_reason"] == "length":
        return CAUSES[2]
    return CAUSES[4] if row["parses"] else CAUSES[3]


def failure_table(df, max_tokens: int | None = None):
    """Per mode, how many replies fall under each cause (counts; each row sums to the requests)."""
    import pandas as pd

    causes = df.apply(failure_cause, axis=1)
    out = pd.crosstab(df["mode"], causes).reindex(index=list(dict.fromkeys(df["mode"])), columns=list(CAUSES))
    out = out.fillna(0).astype(int)
    out.insert(0, "requests", out.sum(axis=1))
    out["median reply tokens"] = df.groupby("mode")["completion_tokens"].median().astype(int)
    if max_tokens is not None:
        out.columns.name = f"max_tokens = {max_tokens}"
    return out


def structured_reading(df) -> str:
    """What the failure table says, mode by mode, as sentences computed from the replies."""
    table = failure_table(df)
    out = []
    for mode, r in table.iterrows():
        n = int(r["requests"])
        valid = int(r[CAUSES[0]] + r[CAUSES[1]])
        parts = [f"{valid} of {n} valid"]
        if valid:
            parts.append(f"{int(r[CAUSES[0]])} of them with the right time")
        fails = [(c, int(r[c])) for c in CAUSES[2:] if r[c]]
        if fails:
            parts.append("the rest " + ", ".join(f"{k} {c}" for c, k in fails))
        out.append(f"**{mode.replace('_', ' ')}**: " + "; ".join(parts) + ".")
    return " ".join(out)
