"""Run setup: the RunConfig form (scenario, config_ver, test_mode, backend, precision, batch, durations,
expected rate, audit test) with the equivalent `unet3d ... run ...` and `make run RUN_ARGS=...` to copy,
and how long the run will take.

The form shows the fields that apply: durations and query counts only for a performance run, the
expected QPS for Offline and the expected latency for SingleStream (LoadGen ignores the others; a
hidden field is not part of the run). A field whose value is refused is outlined in red with the reason
below; the commands are then not shown and cannot be copied, so a copied command is always the form's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Header, Input, Label, Select, Static

from console import messages as m
from console.widgets.footer import ConsoleFooter
from core.benchmark import AUDIT_TESTS, CONFIG_VERS, PRECISIONS, SCENARIOS, TEST_MODES, RunConfig
from core.errors import UnetError, UsageError
from screens.base import ConsoleScreen

BACKENDS = ("ort", "torch", "tensorrt")
CHOICES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("scenario", "Scenario", SCENARIOS),
    ("config_ver", "Config", CONFIG_VERS),
    ("test_mode", "Test mode", TEST_MODES[:2]),
    ("backend", "Backend", BACKENDS),
    ("precision", "Precision", PRECISIONS),
)
NUMBERS: tuple[tuple[str, str, Literal["integer", "number"]], ...] = (
    ("gpu_batch_size", "Batch (windows)", "integer"),
    ("min_duration", "Min duration s", "number"),
    ("max_duration", "Max duration s", "number"),
    ("min_query_count", "Min queries", "integer"),
    ("max_query_count", "Max queries", "integer"),
    ("offline_expected_qps", "Expected QPS", "number"),
    ("single_stream_expected_latency_ms", "Expected ms", "number"),
)
PERFORMANCE_ONLY = ("min_duration", "max_duration", "min_query_count", "max_query_count")


def applies(name: str, scenario: str, test_mode: str) -> bool:
    """Whether field ``name`` means anything for a run of ``scenario`` / ``test_mode``: an accuracy
    run issues every sample once (no durations, counts or expected rate); Offline is sized by its
    expected QPS, SingleStream by its expected latency."""
    accuracy = test_mode == "AccuracyOnly"
    if name in PERFORMANCE_ONLY:
        return not accuracy
    if name == "offline_expected_qps":
        return scenario == "Offline" and not accuracy
    if name == "single_stream_expected_latency_ms":
        return scenario == "SingleStream" and not accuracy
    return True


def placeholder(name: str, cfg: RunConfig) -> str:
    """What an empty field means (the value LoadGen or user.conf then uses)."""
    from core.estimate import MLPERF_MIN_DURATION_S, OFFLINE_MIN_QUERY_COUNT, SINGLE_STREAM_MIN_QUERY_COUNT
    from core.harness.settings import target_latency_ms, target_qps

    base = cfg.with_(offline_expected_qps=None, single_stream_expected_latency_ms=None)
    return {
        "gpu_batch_size": "required",
        "min_duration": f"{MLPERF_MIN_DURATION_S:.0f} (mlperf.conf)",
        "max_duration": "none",
        "min_query_count": str(
            OFFLINE_MIN_QUERY_COUNT if cfg.scenario == "Offline" else SINGLE_STREAM_MIN_QUERY_COUNT
        ),
        "max_query_count": "none",
        "offline_expected_qps": f"{target_qps(base):g} ({cfg.backend} default)",
        "single_stream_expected_latency_ms": f"{target_latency_ms(base):g} ({cfg.backend} default)",
    }[name]


class RunSetupScreen(ConsoleScreen):
    HELP = (
        "Every field maps to a `unet3d run` flag (NVIDIA's spelling); only the fields that apply to the "
        "chosen scenario and test mode are shown. Empty durations and counts mean LoadGen's mlperf.conf "
        "values (600 s minimum: use 10-60 s for a quick look). The commands below run the same thing "
        "from a shell, in this workspace. `s` starts the run and opens the monitor."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start run", id="run.start", tooltip="Start this run (opens the monitor)"),
        Binding("y", "copy('cli')", "Copy cmd", id="run.copy", tooltip="Copy the equivalent unet3d command"),
        Binding(
            "Y",
            "copy('make')",
            "Copy make",
            id="run.copy_make",
            show=False,
            tooltip="Copy the equivalent make run RUN_ARGS=... command",
        ),
    ]

    def compose(self) -> ComposeResult:
        app: Any = self.app
        cfg: RunConfig = app.run_config
        yield Header(show_clock=False)
        with VerticalScroll(id="run-form"):
            with Grid(id="form-grid"):
                for name, label, values in CHOICES:
                    with Horizontal(classes="field", id=f"row-{name}"):
                        yield Label(label, classes="field-label")
                        yield Select(
                            [(v, v) for v in values],
                            value=getattr(cfg, name),
                            allow_blank=False,
                            id=f"f-{name}",
                        )
                for name, label, kind in NUMBERS:
                    v = getattr(cfg, name)
                    text = "" if v is None else (str(int(v)) if float(v).is_integer() else str(v))
                    with Horizontal(classes="field", id=f"row-{name}"):
                        yield Label(label, classes="field-label")
                        yield Input(text, placeholder=placeholder(name, cfg), type=kind, id=f"f-{name}")
                with Horizontal(classes="field", id="row-audit_test"):
                    yield Label("Audit test", classes="field-label")
                    yield Select(
                        [(t, t) for t in AUDIT_TESTS],
                        value=cfg.audit_test or Select.NULL,
                        prompt="none",
                        id="f-audit_test",
                    )
            with Vertical(id="commands"):
                yield Label("Equivalent commands (this workspace)", classes="section-title")
                yield Static("", id="cmd-cli", markup=False)
                yield Static("", id="cmd-make", markup=False)
                yield Static("", id="cmd-error")
                yield Static("", id="cmd-estimate", markup=False)
        with Horizontal(id="run-buttons"):  # below the scrolled form: always on screen
            yield Button("Start run (s)", variant="primary", id="start", compact=True)
            yield Button("Copy unet3d command (y)", id="copy-cli", compact=True)
            yield Button("Copy make command (Y)", id="copy-make", compact=True)
        yield ConsoleFooter()

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "cursor_blink", True)
        self.update_commands()
        self.watch(self.app, "status_report", lambda _r: self.update_backends(), init=True)
        self.watch(self.app, "runs", lambda _r: self.update_commands(), init=False)  # a new pace

    def update_backends(self) -> None:
        """Label backends this machine cannot run, with the reason, so nobody picks one blind."""
        rep = getattr(self.app, "status_report", None)
        if rep is None:
            return
        try:
            items = {i.name: i for i in rep.section("backends").items}
        except KeyError:
            return
        sel = self.query_one("#f-backend", Select)
        current = sel.value
        opts = []
        for b in BACKENDS:
            it = items.get(b)
            label = b if it is None or it.ok else f"{b} (unavailable: {it.detail})"[:60]
            opts.append((label, b))
        with self.prevent(Select.Changed):
            sel.set_options(opts)
            sel.value = current

    def _choice(self, name: str) -> str:
        return str(self.query_one(f"#f-{name}", Select).value)

    def read_config(self) -> RunConfig:
        """The form as a validated RunConfig, from the fields that apply; a UsageError names the
        bad flag (--name=...)."""
        kw: dict[str, Any] = {name: self._choice(name) for name, _label, _values in CHOICES}
        audit = self.query_one("#f-audit_test", Select).value
        kw["audit_test"] = None if audit is Select.NULL else audit
        for name, _label, kind in NUMBERS:
            if not applies(name, kw["scenario"], kw["test_mode"]):
                continue
            text = self.query_one(f"#f-{name}", Input).value.strip()
            if not text:
                if name == "gpu_batch_size":
                    raise UsageError("--gpu_batch_size needs a value")
                continue
            try:
                kw[name] = int(text) if kind == "integer" else float(text)
            except ValueError:
                raise UsageError(f"--{name}={text} is not a number") from None
        return RunConfig(**kw).validate()

    def show_fields(self, scenario: str, test_mode: str) -> None:
        """Show the fields that apply; each one's placeholder says what empty means. Only a change of
        scenario, test mode or backend gets here, never a keystroke in a number field."""
        cfg = RunConfig(scenario=scenario, test_mode=test_mode, backend=self._choice("backend"))
        for name, _label, _kind in NUMBERS:
            self.query_one(f"#row-{name}").display = applies(name, scenario, test_mode)
            self.query_one(f"#f-{name}", Input).placeholder = placeholder(name, cfg)

    @on(Select.Changed)
    @on(Input.Changed)
    def update_commands(self, event: Any = None) -> None:
        app: Any = self.app
        if event is None or isinstance(event, Select.Changed):
            self.show_fields(self._choice("scenario"), self._choice("test_mode"))
        err = self.query_one("#cmd-error", Static)
        for field in self.query(Input):
            field.remove_class("-invalid")
        try:
            cfg = self.read_config()
        except UnetError as exc:
            bad = str(exc).removeprefix("--").split("=", 1)[0].split(" ", 1)[0]
            if bad in {n for n, _l, _k in NUMBERS}:
                self.query_one(f"#f-{bad}", Input).add_class("-invalid")
            err.update(Text(f"✘ {exc}", style="bold red"))
            for cid in ("#cmd-cli", "#cmd-make", "#cmd-estimate"):  # never a command the form is not
                self.query_one(cid, Static).update("")
            self.query_one("#start", Button).disabled = True
            app.run_form_error = str(exc)
            return
        err.update("")
        app.run_form_error = ""
        self.query_one("#start", Button).disabled = False
        app.run_config = cfg
        self.query_one("#cmd-cli", Static).update("$ " + cfg.cli_command(app.ws))
        self.query_one("#cmd-make", Static).update("$ " + cfg.make_command(app.ws))
        self.query_one("#cmd-estimate", Static).update("Time: " + self.estimate(cfg))

    def estimate(self, cfg: RunConfig) -> str:
        from core.estimate import run_estimate

        app: Any = self.app
        try:
            return run_estimate(app.ws, cfg, app.runs).text()
        except Exception as exc:  # an estimate must never break the form
            return f"unknown ({type(exc).__name__})"

    def action_start(self) -> None:
        try:
            cfg = self.read_config()
        except UnetError as exc:
            self.notify(str(exc), severity="error")
            return
        self.post_message(m.RunRequested(cfg))

    def action_copy(self, which: str) -> None:
        """Copy the command of the form as it is now (the App refuses while it has an error)."""
        self.app.copy_run_command(which)  # type: ignore[attr-defined]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        elif event.button.id == "copy-cli":
            self.action_copy("cli")
        elif event.button.id == "copy-make":
            self.action_copy("make")
