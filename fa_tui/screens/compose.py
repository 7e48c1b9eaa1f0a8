"""Compose: build a run (or a sweep) field by field, validated as you type by the same
pydantic schema the worker uses, then launch it, or load/save it as a preset."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Collapsible, Footer, Header, Static

from fa_contract.config import Config
from fa_tui.core.form import (ADVANCED_TITLE, DEVICE, FORM, JOBS, SEEDS, Composition, choices,
                              compose, default_values, description, device_choices, flatten,
                              kind, to_text)
from fa_tui.launch import create_run
from fa_tui.presets import PresetError, describe, load_plan, save_preset, shipped_presets
from fa_tui.screens.dialogs import PresetPicker, PromptScreen
from fa_tui.screens.messages import RunsLaunched
from fa_tui.widgets.form_field import FormField


def _widget_value(path: str, value: Any) -> Any:
    """What a field's widget holds for a config value: the value for a Select, text otherwise."""
    return value if kind(path) == "choice" else to_text(value)


class ComposeScreen(Screen):
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch"),
        Binding("ctrl+o", "load", "Load preset"),
        Binding("ctrl+s", "save", "Save preset"),
        Binding("ctrl+r", "reset", "Defaults"),
        Binding("escape", "app.switch_mode('runs')", "Runs", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.base = default_values()
        self.values = self._values_from(self.base)
        self.plan: list[tuple[str, Config]] | None = None   # a loaded preset's own runs
        self.composition = compose(self.base, self.values)

    @staticmethod
    def _values_from(flat: dict[str, Any]) -> dict[str, Any]:
        extra = {SEEDS: str(flat["run.seed"]), JOBS: "1"}
        return {spec.path: extra[spec.path] if spec.path in extra
                else _widget_value(spec.path, flat.get(spec.path))
                for _, group in FORM for spec in group}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="compose-body"):
            with VerticalScroll(id="form"):
                for title, group in FORM:
                    if title == ADVANCED_TITLE:
                        with Collapsible(title="Advanced: every other key of the schema",
                                         collapsed=True, id="advanced"):
                            for spec in group:
                                yield FormField(spec, self.values[spec.path])
                        continue
                    yield Static(title, classes="section", name=title)
                    for spec in group:
                        yield FormField(spec, self.values[spec.path])
            yield Static(id="field-help")
        yield Static(id="plan")
        with Horizontal(id="actions"):
            yield Button("Launch  ^l", id="launch", variant="primary", compact=True)
            yield Button("Load preset  ^o", id="load", compact=True)
            yield Button("Save preset  ^s", id="save", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"new runs go to {self.app.runs_dir}"
        self._update()
        first = self.query(FormField).first()
        first.query_one("Input, Select").focus()     # enter and typing act at once
        self._help(first)

    def on_descendant_focus(self, event) -> None:
        field = next((w for w in event.widget.ancestors_with_self if isinstance(w, FormField)),
                     None)
        if field is not None:
            self._help(field)

    def _help(self, field: FormField) -> None:
        """The focused field's schema description, allowed values and default, beside the
        form: what a key means should not need the docs."""
        path = field.path
        text = Text()
        text.append(field.spec.label, "bold")
        text.append(f"\n{path}\n\n" if path not in (SEEDS, JOBS) else "\n\n", "dim")
        text.append((description(path) or "no description in the schema") + "\n")
        options = choices(path)
        if options is not None:
            text.append("\none of: ", "dim")
            text.append(", ".join(to_text(o) for o in options))
        elif kind(path) == "number":
            text.append("\nseveral values, comma-separated, make a sweep", "dim")
        default = default_values().get(path)
        if path not in (SEEDS, JOBS):
            text.append("\ndefault: ", "dim")
            text.append(to_text(default) or "unset")
        self.query_one("#field-help", Static).update(text)
    # --- the form -----------------------------------------------------------------------------
    @on(FormField.Changed)
    def _changed(self, event: FormField.Changed) -> None:
        if self.values.get(event.field.path) != event.value:
            self.values[event.field.path] = event.value
            if event.field.path not in (DEVICE, JOBS):
                self.plan = None                 # edited: launch what the form says
        self._update()

    def _update(self) -> None:
        """Show the fields that matter for the current choices, errors next to their field,
        and what a launch would start."""
        self.composition = compose(self.base, self.values)
        for field in self.query(FormField):
            field.display = field.spec.visible(self.values)
            field.set_error(self.composition.errors.get(field.path))
        for title in self.query(".section"):     # a group with no field to show (SLURM)
            group = dict(FORM).get(title.name or "", ())
            title.display = any(spec.visible(self.values) for spec in group)
        self.query_one("#plan", Static).update(self._plan_text(self.composition))

    def _plan_text(self, comp: Composition) -> Text:
        text = Text()
        if self.plan is not None:
            text.append(f"preset: {len(self.plan)} run(s): ", "bold")
            text.append(", ".join(name for name, _ in self.plan[:4]))
            text.append(" …" if len(self.plan) > 4 else "")
            return text
        if comp.errors or comp.general:
            hidden = [p for p in comp.errors if not self._visible(p)]
            text.append("fix the fields marked in red", "bold red")
            for msg in comp.general + [f"{p}: {comp.errors[p]}" for p in hidden]:
                text.append(f"\n{msg}", "red")
            return text
        text.append(f"ctrl+l launches {len(comp.configs)} run(s): ", "bold")
        text.append(", ".join(comp.names[:4]) + (" …" if len(comp.names) > 4 else ""))
        return text

    def _visible(self, path: str) -> bool:
        return any(f.path == path and f.display for f in self.query(FormField))

    def _fill(self, flat: dict[str, Any]) -> None:
        """Load config values into the form (the widgets' change events then find nothing
        new, so a loaded preset's plan survives)."""
        self.base = flat
        self.values = self._values_from(flat)
        for field in self.query(FormField):
            field.value = self.values[field.path]
        self._update()

    # --- actions ------------------------------------------------------------------------------
    def action_reset(self) -> None:
        self.plan = None
        self._fill(default_values())

    def action_load(self) -> None:
        self.app.push_screen(PresetPicker(shipped_presets(), describe), self._load)

    def _load(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            plan = load_plan(path)
        except PresetError as e:
            self.notify(str(e), title="Preset not loaded", severity="error", timeout=15)
            return
        self.plan = [(run.name, run.config) for run in plan.runs]
        # the form shows the first run under the preset's base name: editing a field then
        # names the new runs after what they are, not after the first run's swept values
        flat = flatten(plan.runs[0].config.model_dump(mode="json"))
        flat["run.name"] = plan.base
        self._fill(flat)
        self.notify(f"{plan.name}: {len(plan.runs)} run(s); the form shows the first. "
                    "Launching starts them all unless you edit a field.")

    def action_save(self) -> None:
        if not self.composition.configs:
            self.notify("Fix the form's errors before saving.", severity="error")
            return
        name = self.composition.base_name
        self.app.push_screen(PromptScreen("Save the composition as a preset", f"{name}.toml",
                                          "a .toml path; a sweep is saved as a [sweep] table"),
                             self._save)

    def _save(self, path: str | None) -> None:
        if path is None:
            return
        try:
            save_preset(self.composition.preset(self.values), Path(path).expanduser(),
                        description="composed in fa-tui")
        except OSError as e:
            self.notify(f"{path}: {e.strerror}", title="Not saved", severity="error")
            return
        self.notify(f"Saved {path}")

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        self.run_action(event.button.id)

    def action_launch(self) -> None:
        comp = self.composition
        if self.plan is not None:
            runs = self.plan
        elif comp.configs:
            runs = list(zip(comp.names, comp.configs))
        else:
            self.notify("Fix the fields marked in red first.", severity="error")
            return
        if JOBS in comp.errors:
            self.notify(comp.errors[JOBS], title="parallel", severity="error")
            return
        self._launch(runs, self.values[DEVICE], int(self.values[JOBS]))

    @work(thread=True, exclusive=True, group="launch")
    def _launch(self, runs: list[tuple[str, Config]], device: str, jobs: int) -> None:
        """Create every run directory (`queued`), then hand them to the app's launch queue,
        which starts `jobs` at a time. With device auto and several GPUs, runs are spread
        over the GPUs; otherwise run.device decides. A failure says which run and why."""
        from fa_tui.preflight import PreflightError, check_launch
        created = []
        gpus = [d.removeprefix("cuda:") for d in device_choices() if d.startswith("cuda:")]
        if any(cfg.run.executor == "slurm" for _, cfg in runs):
            self._submit(runs, device)
            return
        gpus = gpus if device == "auto" else []
        configs = [(name, cfg.model_copy(update={"run": cfg.run.model_copy(
            update={"device": device, "name": name})})) for name, cfg in runs]
        try:
            checked = check_launch([c for _, c in configs], self.app.runs_dir, jobs, gpus,
                                   echo=lambda m: self.app.call_from_thread(self.notify, m),
                                   show_progress=False)
        except PreflightError as e:          # nothing was created
            self.app.call_from_thread(self.notify, str(e), title="Not launched",
                                      severity="error", timeout=20)
            return
        try:
            for name, cfg in configs:
                created.append(create_run(self.app.runs_dir, cfg, name))
            self.app.start(created, jobs, gpus, estimates={
                str(r.path.resolve()): checked.estimates[name].total
                for r, (name, _) in zip(created, configs)})
        except Exception as e:  # noqa: BLE001 — anything the launcher raises goes to the user
            self.app.call_from_thread(self.notify, f"{type(e).__name__}: {e}",
                                      title=f"Launch failed ({len(created)} run(s) created)",
                                      severity="error", timeout=15)
        if created:
            self.app.call_from_thread(self.post_message,
                                      RunsLaunched([run.name for run in created]))

    def _submit(self, runs: list[tuple[str, Config]], device: str) -> None:
        """run.executor = slurm: the sweep becomes one job array (fa_tui/slurm.py); the Runs
        screen then shows each run's queue state. Nothing is created when SLURM refuses."""
        from fa_tui.slurm import SlurmError, launch
        runs = [(name, cfg.model_copy(update={"run": cfg.run.model_copy(update={
            "device": device, "executor": "slurm"})})) for name, cfg in runs]
        try:
            created = launch(self.app.runs_dir, runs, source="Compose")
        except (SlurmError, OSError) as e:
            self.app.call_from_thread(self.notify, str(e), title="Not submitted to SLURM",
                                      severity="error", timeout=15)
            return
        self.app.call_from_thread(self.post_message,
                                  RunsLaunched([run.name for run in created]))
