"""Training data for `runtime.tuning`: load a folder of files and turn every row into what TRL's
SFTTrainer trains on with the model's chat template.

Files: .parquet, .jsonl / .json, .csv, .arrow (searched recursively; hidden files skipped),
each loaded with `datasets`. Row shapes recognised, per file:

| columns                                   | becomes                                          |
| ----------------------------------------- | ------------------------------------------------ |
| messages: [{role, content}, ...]          | conversational `messages`                        |
| prompt + completion (strings or messages) | conversational prompt/completion (loss on the completion) |
| prompt + response                         | prompt/completion                                |
| instruction + input + output (alpaca)     | prompt/completion (instruction, blank line, input) |
| instruction + context + response (dolly)  | prompt/completion (instruction, blank line, context) |
| text                                      | plain `text` (language modelling)                |

DatasetConfig (Kaito's names): `messages_column` names the conversation column;
`context_column` + `response_column` name the prompt and the answer; `response_column` alone
names a text column; `dataset_path` (file or folder, relative to the data folder) and
`dataset_extension` narrow the files; `shuffle_dataset` / `shuffle_seed`; `train_test_split`
is the training fraction (1 = no evaluation split).

When files disagree, prompt/completion rows become two-message conversations; plain text cannot
be mixed with conversations. Bad rows raise DataError naming the file and row (1-based).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}
DATASET_KEYS = {
    "shuffle_dataset",
    "shuffle_seed",
    "train_test_split",
    "dataset_path",
    "dataset_extension",
    "context_column",
    "response_column",
    "messages_column",
}
ROLES = {"system", "user", "assistant", "tool", "developer", "function"}

# Output forms
CONVERSATION = "messages"
PROMPT_COMPLETION = "prompt_completion"
TEXT = "text"


class DataError(ValueError):
    """The training data cannot be used; the message names the file and row."""


@dataclass
class TrainingData:
    train: Any  # datasets.Dataset
    eval: Any | None
    form: str  # "messages", "prompt_completion" or "text"
    files: list[Path]
    kinds: dict[str, str]  # file -> the shape recognised


def find_files(
    data_dir: str | Path, dataset_path: str | None = None, extension: str | None = None
) -> list[Path]:
    root = Path(data_dir)
    if dataset_path:
        p = Path(dataset_path)
        root = p if p.is_absolute() else root / p
    if not root.exists():
        raise DataError(f"the training data path {root} does not exist")
    exts = set(BUILDERS)
    if extension:
        ext = "." + extension.lower().lstrip(".")
        if ext not in BUILDERS:
            raise DataError(
                f"dataset_extension {extension!r} is not supported; use one of {', '.join(sorted(BUILDERS))}"
            )
        exts = {ext}
    if root.is_file():
        if root.suffix.lower() not in BUILDERS:
            raise DataError(f"{root} is not a supported data file ({', '.join(sorted(BUILDERS))})")
        return [root]
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in exts
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(
            f"no training data files ({', '.join(sorted(exts))}) under {root}; "
            "check tuning.input (urls, image or volume)"
        )
    return files


def _root_cause(e: BaseException) -> str:
    seen = e
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return f"{type(seen).__name__}: {seen}"


def load_file(path: Path, cache_dir: str | None = None):
    import datasets

    builder = BUILDERS[path.suffix.lower()]
    if path.stat().st_size == 0:
        return None
    if builder == "parquet":
        try:
            import pyarrow.parquet as pq

            if pq.ParquetFile(path).metadata.num_rows == 0:
                return None
        except Exception as e:
            raise DataError(
                f"{path}: cannot be read as parquet: {type(e).__name__}: {str(e)[:300]}"
            ) from None
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
    except Exception as e:  # datasets wraps parser errors in DatasetGenerationError
        raise DataError(f"{path}: cannot be read as {builder}: {_root_cause(e)[:500]}") from None


def detect_kind(columns: Sequence[str], cfg: dict, path: Path) -> str:
    cols = set(columns)

    def need(*names: str) -> None:
        missing = [n for n in names if n not in cols]
        if missing:
            raise DataError(
                f"{path}: DatasetConfig names column(s) {', '.join(missing)} that the file does not have "
                f"(columns: {', '.join(sorted(cols))})"
            )

    if cfg.get("messages_column"):
        need(cfg["messages_column"])
        return "messages_column"
    if cfg.get("context_column") and cfg.get("response_column"):
        need(cfg["context_column"], cfg["response_column"])
        return "context_response"
    if cfg.get("response_column") and not cfg.get("context_column"):
        need(cfg["response_column"])
        return "response_text"
    if cfg.get("context_column"):
        raise DataError("DatasetConfig.context_column needs response_column too")
    if "messages" in cols:
        return "messages"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if {"prompt", "response"} <= cols:
        return "prompt_response"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"instruction", "response"} <= cols:
        return "dolly"
    if "text" in cols:
        return "text"
    raise DataError(
        f"{path}: cannot tell the data format from columns {', '.join(sorted(cols)) or '(none)'}; expected "
        "messages, prompt+completion, prompt+response, instruction+input+output, "
        "instruction+context+response or text (or set DatasetConfig.messages_column / context_column / "
        "response_column)"
    )


def _where(path: Path, row: int) -> str:
    return f"{path}: row {row + 1}"


def _text(value: Any, path: Path, row: int, column: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        raise DataError(f"{_where(path, row)}: column {column!r} is empty")
    if not isinstance(value, str):
        raise DataError(f"{_where(path, row)}: column {column!r} must be text, not {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{_where(path, row)}: column {column!r} is empty")
    return value


def _optional_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _messages(value: Any, path: Path, row: int, column: str) -> list[dict]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(
                f"{_where(path, row)}: column {column!r} holds text that is not a JSON list"
            ) from None
    if not isinstance(value, list | tuple) or not value:
        got = "an empty list" if isinstance(value, list | tuple) else type(value).__name__
        raise DataError(
            f"{_where(path, row)}: column {column!r} must be a non-empty list of {{role, content}} messages, not {got}"
        )
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(
                f"{_where(path, row)}: message {i + 1} of {column!r} must be an object with role and content"
            )
        role, content = m["role"], m["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise DataError(
                f"{_where(path, row)}: message {i + 1} has role {role!r}; use one of {', '.join(sorted(ROLES))}"
            )
        if not isinstance(content, str):
            raise DataError(
                f"{_where(path, row)}: message {i + 1} content must be text, not {type(content).__name__}"
            )
        out.append({"role": role, "content": content})
    return out


def _join(a: str, b: str) -> str:
    return f"{a}\n\n{b}" if b.strip() else a


def _pc(prompt: str, completion: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion}],
    }


def normalize_row(row: dict, kind: str, cfg: dict, path: Path, idx: int) -> dict:
    """One row in its output form: {"messages"}, {"prompt", "completion"} or {"text"}."""
    if kind in ("messages", "messages_column"):
        col = cfg.get("messages_column") or "messages"
        msgs = _messages(row[col], path, idx, col)
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"{_where(path, idx)}: the conversation has no assistant message to learn from")
        return {"messages": msgs}
    if kind == "prompt_completion":
        p, c = row["prompt"], row["completion"]
        if isinstance(p, list | tuple) or (isinstance(p, str) and p.lstrip().startswith("[{")):
            return {
                "prompt": _messages(p, path, idx, "prompt"),
                "completion": _messages(c, path, idx, "completion"),
            }
        return _pc(_text(p, path, idx, "prompt"), _text(c, path, idx, "completion"))
    if kind == "prompt_response":
        return _pc(_text(row["prompt"], path, idx, "prompt"), _text(row["response"], path, idx, "response"))
    if kind == "alpaca":
        prompt = _join(_text(row["instruction"], path, idx, "instruction"), _optional_text(row.get("input")))
        return _pc(prompt, _text(row["output"], path, idx, "output"))
    if kind == "dolly":
        prompt = _join(
            _text(row["instruction"], path, idx, "instruction"), _optional_text(row.get("context"))
        )
        return _pc(prompt, _text(row["response"], path, idx, "response"))
    if kind == "context_response":
        cc, rc = cfg["context_column"], cfg["response_column"]
        return _pc(_text(row[cc], path, idx, cc), _text(row[rc], path, idx, rc))
    if kind in ("text", "response_text"):
        col = cfg.get("response_column") or "text"
        return {"text": _text(row[col], path, idx, col)}
    raise AssertionError(kind)


FORM_OF = {
    "messages": CONVERSATION,
    "messages_column": CONVERSATION,
    "text": TEXT,
    "response_text": TEXT,
}


def _to_messages(row: dict) -> dict:
    return {"messages": list(row["prompt"]) + list(row["completion"])}


def check_dataset_config(cfg: dict) -> None:
    unknown = sorted(set(cfg) - DATASET_KEYS)
    if unknown:
        raise DataError(
            f"DatasetConfig has unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(DATASET_KEYS))}"
        )
    split = cfg.get("train_test_split", 1)
    if isinstance(split, bool) or not isinstance(split, int | float) or not 0 < split <= 1:
        raise DataError("DatasetConfig.train_test_split must be a number in (0, 1] (the training fraction)")


def load_training_data(
    data_dir: str | Path, dataset_config: dict | None = None, cache_dir: str | None = None, log=None
) -> TrainingData:
    """Load, check and normalise every data file; shuffle and split as DatasetConfig says."""
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    cfg = dict(dataset_config or {})
    check_dataset_config(cfg)
    files = find_files(data_dir, cfg.get("dataset_path"), cfg.get("dataset_extension"))
    parts = []
    kinds: dict[str, str] = {}
    for path in files:
        ds = load_file(path, cache_dir)
        if ds is None or len(ds) == 0:
            if log:
                log("data_file_empty", file=str(path))
            continue
        kind = detect_kind(ds.column_names, cfg, path)
        kinds[str(path)] = kind
        form = FORM_OF.get(kind, PROMPT_COMPLETION)
        # Validate and convert in Python, so errors name the row; map() keeps large files on disk.
        out = ds.map(
            lambda row, idx, _k=kind, _p=path: normalize_row(row, _k, cfg, _p, idx),
            with_indices=True,
            remove_columns=ds.column_names,
            load_from_cache_file=False,
            desc=None,
        )
        parts.append((path, form, out))
        if log:
            log("data_file", file=str(path), rows=len(out), format=kind)
    if not parts:
        raise DataError(
            f"no training rows: the data files under {data_dir} are empty ({', '.join(map(str, files))})"
        )
    forms = {f for _, f, _ in parts}
    if TEXT in forms and len(forms) > 1:
        text_file = next(p for p, f, _ in parts if f == TEXT)
        conv_file = next(p for p, f, _ in parts if f != TEXT)
        raise DataError(
            f"plain text ({text_file}) cannot be mixed with conversations ({conv_file}); use one kind of data"
        )
    if forms == {CONVERSATION, PROMPT_COMPLETION}:
        parts = [
            (
                p,
                CONVERSATION,
                d.map(_to_messages, remove_columns=d.column_names) if f == PROMPT_COMPLETION else d,
            )
            for p, f, d in parts
        ]
        form = CONVERSATION
    else:
        form = forms.pop()
    try:
        full = datasets.concatenate_datasets([d for _, _, d in parts]) if len(parts) > 1 else parts[0][2]
    except ValueError as e:
        raise DataError(f"the data files do not share one schema: {e}") from None
    if len(full) == 0:
        raise DataError(f"no training rows in {', '.join(map(str, files))}")
    if cfg.get("shuffle_dataset", True):
        full = full.shuffle(seed=int(cfg.get("shuffle_seed", 42)))
    split = float(cfg.get("train_test_split", 1))
    eval_ds = None
    if split < 1:
        n_train = round(len(full) * split)
        if 0 < n_train < len(full):
            parts2 = full.train_test_split(train_size=n_train, shuffle=False)
            full, eval_ds = parts2["train"], parts2["test"]
        elif log:
            log("no_eval_split", rows=len(full), train_test_split=split)
    return TrainingData(full, eval_ds, form, files, kinds)
