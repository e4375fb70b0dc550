"""The `si-bench` command: a thin typer layer over the Python API in `si_bench.api`.

One module per command; each defines `command`, built from the config classes it takes (cli/_options.py)
and registered here under its name.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import TYPE_CHECKING, cast

import duckdb
import typer

from si_bench.errors import EnvironmentFailure, SIBenchError, environment_reason
from si_bench.reports.tables import terminal_text

if TYPE_CHECKING:
    from typer._click.exceptions import UsageError

# Our own rich progress bars replace the libraries' tqdm bars (tqdm reads this when it is first imported,
# which happens only inside the command modules' functions).
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

COMMANDS = {
    "evaluate": "evaluate",
    "sql": "sql",
    "run": "run",
    "sweep": "sweep",
    "train-round": "train_round",
    "runs": "runs",
    "fit": "fit",
    "simulate": "simulate",
    "demo": "demo",
    "leaderboard": "leaderboard",
    "import": "import_",
    "import-lm-eval": "import_lm_eval",
    "lm-eval": "lm_eval_",
}

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="si-bench: measure, train and forecast LLM self-improvement (solver-verifier gap).",
)

for _name, _module in COMMANDS.items():
    _mod = importlib.import_module(f"si_bench.cli.{_module}")
    _settings = getattr(_mod, "CONTEXT_SETTINGS", None)  # a pass-through command takes arguments it does not declare
    app.command(_name, help=_mod.command.__doc__, context_settings=_settings)(_mod.command)


# typer vendors click and exports, of its usage errors, only BadParameter: its base is what every command-line
# mistake raises (a value that does not convert, an unknown flag, a missing argument).
USAGE_ERROR = cast("type[UsageError]", typer.BadParameter.__base__)


def _one_line(message: str) -> str:
    text = " ".join(message.split())
    return text[:1].lower() + text[1:]


def main() -> None:
    try:
        # Not standalone: click would print its usage block for a conversion error, and return an exit code.
        code = app(standalone_mode=False)
    except USAGE_ERROR as exc:
        # no command at all is typer's help (no_args_is_help); any other mistake is si-bench's one line
        print(exc.format_message() if not sys.argv[1:] else f"error: {terminal_text(_one_line(exc.format_message()))}",
              file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except SIBenchError as exc:
        print(f"error: {terminal_text(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (OSError, duckdb.Error) as exc:  # the environment failed mid-work (disk full, a vanished mount)
        reason = environment_reason(exc)
        if reason is None:
            raise
        print(f"error: {terminal_text(reason)}", file=sys.stderr)
        sys.exit(EnvironmentFailure.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
