"""Run setup: the RunConfig form (scenario, config_ver, test_mode, backend, precision, batch, durations,
audit test) with the equivalent `unet3d run ...` and `make run RUN_ARGS=...` to copy."""

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
from core.errors import UnetError
from screens.base import ConsoleScreen

BACKENDS = ("ort", "torch", "tensorrt")
NUMBERS: tuple[tuple[str, str, Literal["integer", "number"]], ...] = (
    ("gpu_batch_size", "Batch (windows)", "integer"),
    ("min_duration", "Min duration (s)", "number"),
    ("max_duration", "Max duration (s)", "number"),
    ("min_query_count", "Min queries", "integer"),
    ("max_query_count", "Max queries", "integer"),
    ("offline_expected_qps", "Offline QPS", "number"),
)


class RunSetupScreen(ConsoleScreen):
    HELP = (
        "Every field maps to a `unet3d run` flag (NVIDIA's spelling). Empty durations and counts mean "
        "LoadGen's mlperf.conf values (600 s minimum: use 10-60 s for a quick look). The two commands "
        "below run the same thing from a shell. `s` starts the run and opens the monitor."
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
                for name, values in (
                    ("scenario", SCENARIOS),
                    ("config_ver", CONFIG_VERS),
                    ("test_mode", TEST_MODES[:2]),
                    ("backend", BACKENDS),
                    ("precision", PRECISIONS),
                ):
                    yield Label(name, classes="field-label")
                    yield Select(
                        [(v, v) for v in values], value=getattr(cfg, name), allow_blank=False, id=f"f-{name}"
                    )
                for name, label, kind in NUMBERS:
                    yield Label(label, classes="field-label")
                    v = getattr(cfg, name)
                    text = "" if v is None else (str(int(v)) if float(v).is_integer() else str(v))
                    hint = "user.conf" if name == "offline_expected_qps" else "mlperf.conf"
                    yield Input(text, placeholder=hint, type=kind, id=f"f-{name}")
                yield Label("audit_test", classes="field-label")
                yield Select(
                    [(t, t) for t in AUDIT_TESTS],
                    value=cfg.audit_test or Select.NULL,
                    prompt="none",
                    id="f-audit_test",
                )
            with Vertical(id="commands"):
                yield Label("Equivalent commands", classes="section-title")
                yield Static("", id="cmd-cli", markup=False)
                yield Static("", id="cmd-make", markup=False)
                yield Static("", id="cmd-error")
            with Horizontal(id="run-buttons"):
                yield Button("Start run (s)", variant="primary", id="start")
                yield Button("Copy unet3d command (y)", id="copy-cli")
                yield Button("Copy make command (Y)", id="copy-make")
        yield ConsoleFooter()

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "cursor_blink", True)
        self.update_commands()
        self.watch(self.app, "status_report", lambda _r: self.update_backends(), init=True)

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

    def read_config(self) -> RunConfig:
        """The form as a validated RunConfig; UsageError names the bad field."""
        kw: dict[str, Any] = {}
        for name in ("scenario", "config_ver", "test_mode", "backend", "precision"):
            kw[name] = self.query_one(f"#f-{name}", Select).value
        audit = self.query_one("#f-audit_test", Select).value
        kw["audit_test"] = None if audit is Select.NULL else audit
        from core.errors import UsageError

        for name, _label, kind in NUMBERS:
            text = self.query_one(f"#f-{name}", Input).value.strip()
            if not text:
                if name == "gpu_batch_size":
                    raise UsageError("--gpu_batch_size needs a value")
                kw[name] = None
                continue
            try:
                kw[name] = int(text) if kind == "integer" else float(text)
            except ValueError:
                raise UsageError(f"--{name}={text} is not a number") from None
        return RunConfig(**kw).validate()

    @on(Select.Changed)
    @on(Input.Changed)
    def update_commands(self) -> None:
        err = self.query_one("#cmd-error", Static)
        try:
            cfg = self.read_config()
        except UnetError as exc:
            err.update(Text(f"✘ {exc}", style="bold red"))
            self.query_one("#start", Button).disabled = True
            return
        err.update("")
        self.query_one("#start", Button).disabled = False
        self.app.run_config = cfg  # type: ignore[attr-defined]
        self.query_one("#cmd-cli", Static).update("$ " + cfg.cli_command())
        self.query_one("#cmd-make", Static).update("$ " + cfg.make_command())

    def action_start(self) -> None:
        try:
            cfg = self.read_config()
        except UnetError as exc:
            self.notify(str(exc), severity="error")
            return
        self.post_message(m.RunRequested(cfg))

    def action_copy(self, which: str) -> None:
        cfg: RunConfig = self.app.run_config  # type: ignore[attr-defined]
        self.app.copy_command(cfg.cli_command() if which == "cli" else cfg.make_command())  # type: ignore[attr-defined]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        elif event.button.id == "copy-cli":
            self.action_copy("cli")
        elif event.button.id == "copy-make":
            self.action_copy("make")
