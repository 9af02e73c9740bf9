"""Runs an absl main so that user errors print as one line and exit with a documented status.

A user error is one line on stderr, `error: ...`, and exit status 2, also when it happens while
the flags are parsed: an unknown flag, a missing required flag, a missing or unreadable config
file, an unknown config key (`--config.train.num_stepz=5`: the nearest key is suggested) or a
value of the wrong type. `run` also keeps the start of a run quiet (`quiet_start`) and finds
`--config=configs/NAME.py` in the installed package when the path does not exist (so the console
scripts run from any directory).

Exit statuses of the binaries:
  0  done (also after SIGTERM / Ctrl-C, which save a checkpoint first)
  1  an internal error (a bug): its traceback is printed
  2  a user error (bad config, flags, data, workdir, or the workdir is in use by another run)
  3  training diverged (kale_jax.errors.NonFiniteError)
  4  a write to the workdir failed, e.g. a full disk (kale_jax.errors.StorageError); rerunning
     the same command once there is space resumes from the last complete checkpoint
In a job of several processes, an error on one process stops the others with the same status
(kale_jax.errors.JobFailedError, whose line names the failed process).
"""
import difflib
import functools
import glob
import importlib.util
import logging as std_logging
import os
import re
import sys
from typing import Callable, List, Optional, Sequence

from absl import app, flags, logging

from kale_jax.errors import NonFiniteError, StorageError, UserError

USER_ERROR_STATUS = 2
DIVERGED_STATUS = NonFiniteError.exit_status  # 3
STORAGE_ERROR_STATUS = StorageError.exit_status  # 4


def run(main: Callable, *, default_config: Optional[Callable[[List[str]], str]] = None) -> None:
    """Like `absl.app.run(main)`, with one-line user errors and a quiet start.

    A `kale_jax.errors.UserError` (or absl's UsageError) raised by `main` prints one line and
    exits 2 (or the error's own `exit_status`: 3 for NonFiniteError, 4 for StorageError); so do
    the errors of flag parsing (`parse_flags`). Other exceptions keep their traceback (status 1).

    Args:
      main: the absl main, main(argv).
      default_config: for a binary whose --config is optional: argv -> the --config value to use
        when the command line has none (it may raise UserError, e.g. nothing to default to).
    """
    quiet_start()

    @functools.wraps(main)
    def guarded(argv):
        try:
            return main(argv)
        except UserError as error:
            _fail(str(error), getattr(error, "exit_status", USER_ERROR_STATUS))
        except app.UsageError as error:
            _fail(f"{error}; see --helpshort", USER_ERROR_STATUS)

    app.run(guarded, flags_parser=functools.partial(parse_flags, default_config=default_config))


def _fail(message: str, status: int = USER_ERROR_STATUS) -> None:
    """Prints `error: message` as one line on stderr and exits with `status`."""
    one_line = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(status)


# ------------------------------------------------------------------------------ a quiet start
_TPU_PROBE = "Unable to initialize backend 'tpu'"


class _NoTpuProbe:
    """Drops jax's INFO line "Unable to initialize backend 'tpu': ... libtpu.so ..." on a machine
    without libtpu, where the TPU probe cannot succeed (with libtpu installed the line stays: a
    TPU that fails to start is worth seeing)."""

    def filter(self, record) -> bool:
        return not (record.levelno <= std_logging.INFO
                    and record.getMessage().startswith(_TPU_PROBE))


def quiet_start(environ=None) -> None:
    """Keeps the start-up lines of TensorFlow and jax that say nothing about the run off a CPU
    run's stderr; call before jax or TensorFlow is imported. Warnings and errors stay.

    * TF_CPP_MIN_LOG_LEVEL=1 (TensorFlow's and XLA's C++ INFO lines, e.g. the CPU-feature notice;
      warnings and errors stay) and TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow prints "oneDNN custom
      operations are on" and absl's "All log messages before absl::InitializeLog()" at every
      import while oneDNN is on; TensorFlow only runs the tfds input pipeline here), each only
      when the user has not set it.
    * jax's "Unable to initialize backend 'tpu'" INFO line, when libtpu is not installed.

    Args:
      environ: the environment to change (default os.environ).
    """
    environ = os.environ if environ is None else environ
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if importlib.util.find_spec("libtpu") is None:
        logger = std_logging.getLogger("jax._src.xla_bridge")
        if not any(isinstance(f, _NoTpuProbe) for f in logger.filters):
            logger.addFilter(_NoTpuProbe())


# ------------------------------------------------------------------------------ flag parsing
_CONFIG_FLAG = "config"


def configs_dir() -> str:
    """The installed package's configs/ directory (the repository's, for an editable install)."""
    import experiments  # pylint: disable=g-import-not-at-top
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(experiments.__file__))),
                        "configs")


def _flag_value(argv: Sequence[str], name: str):
    """(index, value) of the last --name=VALUE / --name VALUE in argv, or (None, None)."""
    found = (None, None)
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            break
        if re.fullmatch(rf"--?{re.escape(name)}", arg) and i + 1 < len(argv):
            found = (i, argv[i + 1])
        elif re.match(rf"--?{re.escape(name)}=", arg):
            found = (i, arg.split("=", 1)[1])
    return found


def _set_flag_value(argv: List[str], index: int, name: str, value: str) -> None:
    if "=" in argv[index]:
        argv[index] = f"--{name}={value}"
    else:
        argv[index + 1] = value


def resolve_config_path(value: str) -> str:
    """The --config value with its file made findable: a path that does not exist relative to
    the working directory is looked up in the installed package (configs/ring.py ->
    <install>/configs/ring.py).

    Args:
      value: PATH or PATH:ARGUMENT, as --config takes it.
    Returns:
      The value to parse, PATH possibly replaced.
    Raises:
      ConfigError: the file does not exist in either place, is a directory or is unreadable.
    """
    from kale_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    path, colon, argument = value.partition(":")
    if not path:
        raise ConfigError("--config is empty; pass a config file, e.g. --config=configs/ring.py")
    candidates = [path]
    if not os.path.isabs(path):
        installed = os.path.join(os.path.dirname(configs_dir()), path)
        if os.path.abspath(installed) != os.path.abspath(path):
            candidates.append(installed)
    for candidate in candidates:
        if os.path.isdir(candidate):
            raise ConfigError(f"--config={value}: {candidate} is a directory; pass a config file "
                              "in it, e.g. --config=configs/ring.py")
        if os.path.exists(candidate):
            if not os.access(candidate, os.R_OK):
                raise ConfigError(f"--config={value}: {candidate} is not readable (permission "
                                  "denied); fix its permissions or copy it")
            if candidate == path:
                return value
            if importlib.util.find_spec("configs") is None:  # configs/*.py import configs.*
                sys.path.append(os.path.dirname(configs_dir()))
            return candidate + colon + argument
    shipped = sorted(os.path.relpath(p, os.path.dirname(configs_dir()))
                     for p in glob.glob(os.path.join(configs_dir(), "*.py"))
                     if not p.endswith("__init__.py"))
    near = difflib.get_close_matches(path, shipped, n=1)
    hint = f"did you mean --config={near[0]}? " if near else ""
    raise ConfigError(f"--config={value}: no such file {path!r} (looked in "
                      f"{' and '.join(repr(os.path.abspath(c)) for c in candidates)}); {hint}"
                      f"shipped configs: {', '.join(shipped)}")


def _overrides(argv: Sequence[str]) -> List[str]:
    """The dotted keys ('train.num_steps') of the --config.* overrides in argv."""
    out = []
    for arg in argv[1:]:
        match = re.match(rf"--?(no)?{_CONFIG_FLAG}\.([^=]+)", arg)
        if match:
            out.append(match.group(2))
    return out


def _load_for_diagnosis(value: str):
    """The config a --config value names (unlocked), or None if it cannot be loaded."""
    from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
    try:
        config = config_flags.ConfigFileFlagParser(_CONFIG_FLAG, lock_config=False).parse(value)
    except Exception:  # pylint: disable=broad-except
        return None
    return config if hasattr(config, "keys") else None


def _type_name(kind) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            tuple: "a comma-separated tuple (e.g. 1,2,3)"}.get(kind, getattr(kind, "__name__",
                                                                            str(kind)))


def describe_override_error(config, path: str) -> Optional[str]:
    """Why `--config.<path>` cannot apply to `config`: the unknown key with the nearest key
    (difflib) and the keys allowed there, or a field that cannot be set from the command line;
    None when the key exists and takes command-line values.

    Args:
      config: the loaded config (a ConfigDict).
      path: the override's dotted key, e.g. 'train.num_stepz'.
    """
    node, walked = config, []
    parts = path.split(".")
    for i, part in enumerate(parts):
        keys = list(node.keys()) if hasattr(node, "keys") else None
        if keys is None:
            return (f"--config.{path}: config.{'.'.join(walked)} is a value "
                    f"({type(node).__name__}), not a group of keys")
        if part not in keys:
            where = f"config.{'.'.join(walked)}" if walked else "config"
            near = difflib.get_close_matches(part, [str(k) for k in keys], n=1, cutoff=0.6)
            head = f"unknown config key --config.{path}: {where} has no key {part!r}"
            if near:
                return (f"{head}; did you mean --config.{'.'.join(walked + [near[0]])}? "
                        "(configs/default.py documents every key)")
            return f"{head}; its keys: {', '.join(sorted(str(k) for k in keys))}"
        walked.append(part)
        if i + 1 < len(parts):
            node = node[part]
    holder = node
    kind = holder.get_type(parts[-1]) if hasattr(holder, "get_type") else type(holder[parts[-1]])
    if kind is type(None):
        return (f"--config.{path}: config.{path} is None in this config without a declared type, "
                "so the command line cannot set it; set it in a config file")
    return None


def _describe_flag_error(error: Exception, argv: Sequence[str], config_value) -> str:
    """One line for an error raised while parsing flags."""
    config = None
    overrides = _overrides(argv)
    if config_value is not None and overrides:
        config = _load_for_diagnosis(config_value)
    if config is not None:  # an unknown key explains most errors of the config overrides
        for path in overrides:
            try:
                message = describe_override_error(config, path)
            except Exception:  # pylint: disable=broad-except
                message = None
            if message:
                return message
    if "Error whilst parsing config file" in str(error):  # ml_collections wraps get_config's
        last = [line for line in str(error).splitlines() if line.strip()][-1].strip()
        ours = re.match(r"kale_jax\.errors\.\w+: (.*)$", last)  # a UserError: its own message
        return ours.group(1) if ours else f"--{_CONFIG_FLAG}={config_value}: {last}"
    if isinstance(error, flags.UnrecognizedFlagError):
        name = error.flagname
        known = [n for n in flags.FLAGS if not n.startswith(f"{_CONFIG_FLAG}.")]
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean --{near[0]}?" if near else ""
        return f"unknown flag --{name}{hint} (--helpshort lists the flags)"
    text = " ".join(str(error).split())
    required = re.search(r"Flag --(\S+) must have a value other than None", text)
    if required:
        name = required.group(1)
        example = {"workdir": "--workdir=workdirs/ring",
                   _CONFIG_FLAG: "--config=configs/ring.py"}.get(name, f"--{name}=...")
        return f"--{name} is required, e.g. {example} (--helpshort lists the flags)"
    bad_value = re.match(r"flag --(\S+?)=(.*?): (.*)$", text)
    if bad_value and bad_value.group(1).startswith(f"{_CONFIG_FLAG}.") and config is not None:
        path = bad_value.group(1)[len(_CONFIG_FLAG) + 1:]
        try:
            kind = _type_name(_field_type(config, path))
        except Exception:  # pylint: disable=broad-except
            kind = None
        if kind:
            reason = re.sub(r"^\('(.*?)', .*\)$", r"\1", bad_value.group(3))
            return (f"--{bad_value.group(1)}={bad_value.group(2)}: config.{path} takes "
                    f"{kind} ({reason})")
    if isinstance(error, flags.Error):
        return f"{text} (--helpshort lists the flags)"
    return f"cannot apply the command line's config flags: {type(error).__name__}: {text}"


def _field_type(config, path: str):
    from ml_collections.config_flags import config_path  # pylint: disable=g-import-not-at-top
    return config_path.get_type(path, config)


def parse_flags(argv: List[str], default_config=None) -> List[str]:
    """absl's flag parsing (`flags.FLAGS(argv)`) with one-line errors (exit status 2).

    Resolves --config's file (`resolve_config_path`), inserts `default_config(argv)` when
    --config is absent and `default_config` is given, then parses. Any error becomes one line
    on stderr: an unknown flag (with the nearest flag), a missing required flag, an unknown
    config key (with the nearest key and the keys allowed there), a value of the wrong type.

    Args:
      argv: sys.argv (program name first).
      default_config: see `run`.
    Returns:
      The arguments left after the flags, program name first (as absl's parser).
    """
    argv = list(argv)
    config_value = None
    if _CONFIG_FLAG in flags.FLAGS:
        try:
            index, value = _flag_value(argv, _CONFIG_FLAG)
            if index is None and default_config is not None:
                value = default_config(argv)
                argv.insert(1, f"--{_CONFIG_FLAG}={value}")  # before any --config.* override
                index = 1
            if index is not None:
                config_value = resolve_config_path(value)
                _set_flag_value(argv, index, _CONFIG_FLAG, config_value)
        except UserError as error:
            _fail(str(error))
    sys.argv = argv  # ml_collections reads the --config.* overrides from sys.argv
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # pylint: disable=broad-except  # (--help exits: SystemExit)
        _fail(_describe_flag_error(error, argv, config_value))


class _QuietOrbax:
    """Drops orbax's INFO chatter (a dozen lines per checkpoint save) and its tracebacks of a
    failed write (several per failed save: kale_jax.checkpoint raises the failure, which the
    binary reports in one line, exit status 4); its other warnings and errors stay."""

    def filter(self, record) -> bool:
        if "orbax" not in record.pathname:
            return True
        if record.levelno <= std_logging.INFO:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            from kale_jax import storage  # pylint: disable=g-import-not-at-top
            return not storage.is_write_failure(record.exc_info[1])
        return True


def quiet_orbax_logs() -> None:
    """Keeps orbax's INFO lines out of the binary's absl log (call from main, after flags)."""
    logging.get_absl_handler().addFilter(_QuietOrbax())


def cpu_devices_hint(backend: str, num_devices: int, num_cores: Optional[int]) -> Optional[str]:
    """The advice to run one CPU device per core, when a CPU-only run has fewer devices than cores
    (XLA:CPU gives much of a convolution's work to one thread; README, Performance), else None."""
    if backend != "cpu" or not num_cores or num_devices >= num_cores:
        return None
    return (f"CPU-only run on {num_devices} device(s) and {num_cores} cores: convolutional "
            f"networks run faster data-parallel over one CPU device per core; set "
            f"JAX_NUM_CPU_DEVICES={num_cores} (the batch must be a multiple of it).")


def log_cpu_devices_hint() -> None:
    """Logs cpu_devices_hint for this process's backend, if any."""
    import jax  # pylint: disable=g-import-not-at-top
    hint = cpu_devices_hint(jax.default_backend(), jax.local_device_count(), os.cpu_count())
    if hint:
        logging.info(hint)
