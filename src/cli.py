"""What every command-line entry point shares: a failure ends in one line on stderr, never a traceback.

`run_cli` turns the errors a user can cause or fix into `error: <what is wrong and what to do>`:
bad input (ValueError, FileNotFoundError, FloatingPointError, a path with a file where a folder should
be or the reverse; exit code 2) and a machine that cannot do what was asked (a folder that is not
writable, a full disk, a device this MindSpore build lacks, a package missing from the environment,
MindSpore's own RuntimeError; exit code 1). `TINYBERT_DEBUG=1` shows the traceback instead.
Training entry points also get a `--help` built from default_config.yaml.
"""
import errno
import io
import json
import os
import re
import sys
from pathlib import Path

DEBUG_ENV = "TINYBERT_DEBUG"
USER_ERROR, ENVIRONMENT_ERROR = 2, 1
# OS errors that say a path given by the user has the wrong shape (a file where a folder should be, or
# the reverse): bad input, not a machine that cannot do what was asked.
_PATH_SHAPE_ERRORS = (errno.EISDIR, errno.ENOTDIR, errno.EEXIST)

# The keys `--help` shows for each entry point; every other key is in default_config.yaml.
MAIN_KEYS = {
    "gd": ("device_target", "seed", "output_dir", "seq_length", "data.train_path", "data.format",
           "data.schema_file", "teacher.model", "teacher.checkpoint", "student.model", "student.init",
           "distill.layer_mapping", "gd.epochs", "gd.batch_size", "gd.learning_rate", "gd.max_steps",
           "checkpoint.save_steps", "checkpoint.resume", "log_steps"),
    "td": ("phase", "device_target", "seed", "output_dir", "seq_length", "task.name", "task.num_labels",
           "task.type", "data.train_path", "data.eval_path", "data.format", "data.padding", "teacher.model",
           "teacher.checkpoint", "teacher.ensemble", "student.model", "student.checkpoint", "student.init",
           "distill.preset", "distill.intermediate_matches", "distill.temperature", "distill.hard_label_weight",
           "distill.teacher_cache", "td1.epochs", "td1.learning_rate", "td2.epochs", "td2.learning_rate",
           "teacher_finetune.epochs", "teacher_finetune.learning_rate", "multitask.tasks", "pruning.pruning_method",
           "pruning.final_threshold", "eval.every_steps", "checkpoint.resume", "log_steps"),
    "export": ("export.checkpoint", "export.file_name", "export.file_format", "export.batch_size",
               "export.head", "student.model", "seq_length", "device_target"),
}

# MindSpore appends its C++ call stack and other details after a line of dashes, each section
# headed `- NAME:` between two such lines; a first line may only say "Refer to 'NAME'".
_MINDSPORE_DETAILS = re.compile(r"\n\s*-{10,}")
_MINDSPORE_SECTION = re.compile(r"\n\s*-{10,}\s*\n- ([^\n]+?):\s*\n\s*-{10,}\s*\n")
_UNSUPPORTED_DEVICE = re.compile(r"Unsupported device target (\w+)\. This process only supports one of the "
                                 r"\[([^\]]*)\]")


def run_cli(main, argv=None, usage=None, config_keys=None):
    """Call main(argv) and turn a user-facing failure into `error: ...` on stderr and a non-zero exit.

    Args:
        main (callable): takes the argument list.
        argv (list[str], default None): the arguments; sys.argv[1:] if None.
        usage (str, default None): the entry point's docstring; with `config_keys`, `-h`/`--help`
            prints it and those keys with their defaults, then exits with code 0.
        config_keys (str, default None): a key of MAIN_KEYS.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if usage is not None and any(arg in ("-h", "--help") for arg in argv):
        print(config_help(usage, MAIN_KEYS[config_keys]))
        sys.exit(0)
    try:
        main(argv)
    except KeyboardInterrupt:  # Ctrl-C: the writers have removed their temporary files on the way out
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print("error: interrupted (Ctrl-C); a training run continues from its newest step checkpoint with "
              "--checkpoint.resume=true", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 -- anything not recognised below is re-raised
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        described = describe_error(error)
        if described is None:
            raise
        message, code = described
        print(f"error: {message}", file=sys.stderr)
        sys.exit(code)


def describe_error(error):
    """(one-line message, exit code) for an error the user can act on, or None for a bug."""
    if isinstance(error, json.JSONDecodeError):
        return _describe_json(error), USER_ERROR
    if isinstance(error, FileNotFoundError) and error.filename is not None and error.strerror:
        return f"{error.filename} does not exist: check the path", USER_ERROR
    if isinstance(error, (ValueError, FileNotFoundError, FloatingPointError)):
        return _first_line(str(error)), USER_ERROR
    if isinstance(error, OSError):
        code = USER_ERROR if error.errno in _PATH_SHAPE_ERRORS else ENVIRONMENT_ERROR
        return _describe_os_error(error), code
    if isinstance(error, ImportError):  # a package the environment lacks (a partial install)
        return (f"{_first_line(str(error))}: install the project's requirements "
                "(pip install -r requirements.txt)"), ENVIRONMENT_ERROR
    if isinstance(error, MemoryError):
        return "out of memory: lower the batch size or seq_length, or use a machine with more memory", \
            ENVIRONMENT_ERROR
    if isinstance(error, RuntimeError):
        return _describe_runtime_error(error), ENVIRONMENT_ERROR
    return None


def _first_line(text):
    """The message without MindSpore's appended details, on one line."""
    text = _MINDSPORE_DETAILS.split(text, 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if lines else "unknown error"


def _describe_os_error(error):
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{f' writing {where}' if where else ''}: free some space or choose an "
                "output folder on another disk")
    if error.errno in (errno.EACCES, errno.EPERM):
        return (f"permission denied{f' on {where}' if where else ''}: choose a folder you can write to "
                "(e.g. --output_dir=...), or fix its permissions")
    if error.errno == errno.EROFS:
        return f"{where or 'the output'} is on a read-only file system: choose a writable output folder"
    if error.errno == errno.EISDIR:
        return f"{where} is a folder where a file was expected: give a file path"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: making a folder where a file is
        return f"a part of {where} is a file where a folder was expected: check the path"
    reason = error.strerror or _first_line(str(error))
    return f"{reason}{f': {where}' if where else ''}"


def _describe_runtime_error(error):
    message = _first_line(str(error))
    parts = _MINDSPORE_SECTION.split(str(error))
    sections = dict(zip(parts[1::2], parts[2::2]))
    referred = re.search(r"Refer to '([^']+)'", message)
    if referred and referred.group(1) in sections:
        message = _first_line(sections[referred.group(1)]).removeprefix("[ERROR] ")
    device = _UNSUPPORTED_DEVICE.search(str(error))
    if device:
        available = device.group(2).replace("'", "")
        return (f"device_target {device.group(1)} is not available in this MindSpore build (it has {available}): "
                f"run with --device_target={available.split(',')[0].strip()}, or install MindSpore built for "
                f"{device.group(1)}")
    return f"{message} (MindSpore; {DEBUG_ENV}=1 shows the traceback)"


def _describe_json(error):
    """Name the file being parsed: JSONDecodeError knows the text but not where it came from, so
    look for the open file or path in the frames that were reading it."""
    path = _file_in_traceback(error.__traceback__)
    where = f"{path} is not valid JSON" if path else "a JSON input is not valid JSON"
    return (f"{where} ({error.msg} at line {error.lineno} column {error.colno}): "
            "give the JSON file the option asks for")


def _file_in_traceback(traceback):
    found = None
    while traceback is not None:
        for value in traceback.tb_frame.f_locals.values():
            if isinstance(value, (io.TextIOBase, io.BufferedIOBase)) and isinstance(getattr(value, "name", None), str):
                found = value.name
        traceback = traceback.tb_next
    return found


def read_json(path, fix="correct it or write it again with the tool that made it"):
    """The JSON value in the file `path` (UTF-8, a byte-order mark allowed).

    Raises FileNotFoundError when it does not exist, and ValueError naming the file and ending in `fix`
    when it is not valid JSON, or not UTF-8 (json.loads of a file's text cannot say which file it was).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}): "
                         f"{fix}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 (byte {error.start}): save it as UTF-8") from None


def require_file(path, what, hint=""):
    """`path` as a Path when it is a file; otherwise a FileNotFoundError, one line: "WHAT PATH does not
    exist" or, for a folder where a file was meant, "WHAT PATH is a folder, not a file", then ": HINT"."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {problem}" + (f": {hint}" if hint else ""))
    return path


def check_distinct_files(files):
    """Refuse a command whose output would overwrite one of its inputs or another of its outputs.

    Args:
        files (dict of str: str or Path or None): {flag: path} in the command line's order, inputs
            first; None (an optional file not given) is skipped.
    Raises:
        ValueError: two flags name one file (compared after resolving links and relative paths).
    """
    seen = {}
    for flag, path in files.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise ValueError(f"{flag} {path} is the same file as {seen[key]}: give each its own file")
        seen[key] = flag


def require_device(target):
    """Raise a ValueError naming the fix when this MindSpore build lacks `target` (CPU, GPU, Ascend).

    Checked before `set_context`, which would fail with a RuntimeError and log library-loading errors.
    """
    import mindspore as ms  # noqa: PLC0415 -- the converters use this module without loading MindSpore
    if not ms.hal.is_available(target):
        available = [name for name in ("CPU", "GPU", "Ascend") if name != target and ms.hal.is_available(name)]
        raise ValueError(f"device_target {target} is not available in this MindSpore build (it has "
                         f"{', '.join(available) or 'no device'}): run with --device_target="
                         f"{available[0] if available else 'CPU'}, or install MindSpore built for {target}")


def _documented_defaults(path):
    """{dotted key: (default text, comment)} from the `key: value  # comment` lines of a yaml file."""
    documented, sections = {}, []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^( *)([A-Za-z_][\w]*):\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if not match:
            continue
        indent, key, value, comment = len(match.group(1)) // 2, match.group(2), match.group(3), match.group(4)
        del sections[indent:]
        if value == "":
            sections.append(key)
            continue
        documented[".".join([*sections, key])] = (value, comment or "")
    return documented


def config_help(usage, keys):
    """`--help` text: the entry point's usage, then `keys` with their defaults and comments."""
    from src.config import DEFAULT_CONFIG  # noqa: PLC0415 -- only --help needs the config module
    documented = _documented_defaults(DEFAULT_CONFIG)
    rows = [(f"--{key}={documented[key][0]}", documented[key][1]) for key in keys]
    width = max(len(option) for option, _ in rows)
    lines = [usage.strip(), "", "Options are --section.key=value (values read as YAML); "
             "--config_path=TASK.yaml applies a task's deltas first (src/task_configs/).",
             "Main keys and their defaults:"]
    lines += [f"  {option:<{width}}  {comment}".rstrip() for option, comment in rows]
    lines.append(f"Every key, documented: {DEFAULT_CONFIG}")
    return "\n".join(lines) + "\n"
