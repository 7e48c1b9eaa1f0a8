"""One row of the Compose form: label, control (a Select for choices, an Input otherwise)
and the field's validation error right next to it."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Select, Static

from fa_tui.core.form import FieldSpec, choices, description, to_text


class FormField(Horizontal):
    DEFAULT_CSS = """
    FormField { height: auto; }
    FormField > Label { width: 17; padding-left: 1; }
    FormField > Input, FormField > Select { width: 22; }
    FormField:focus-within > Label { background: $accent; color: $text; text-style: bold; }
    FormField:focus-within > Input, FormField:focus-within > Select {
        background: $boost; text-style: bold;
    }
    FormField > .error { width: 1fr; color: $error; padding-left: 1; }
    """

    class Changed(Message):
        """The field's value changed (typed text or a chosen option)."""

        def __init__(self, field: "FormField", value: Any) -> None:
            super().__init__()
            self.field = field
            self.value = value

    def __init__(self, spec: FieldSpec, value: Any) -> None:
        super().__init__(id="field-" + spec.path.replace(".", "-"))
        self.spec = spec
        self.initial = value

    @property
    def path(self) -> str:
        return self.spec.path

    def compose(self) -> ComposeResult:
        yield Label(self.spec.label)
        options = choices(self.spec.path)
        if options is not None:
            if self.initial not in options:      # e.g. a preset's "mps" device
                options = (*options, self.initial)
            control = Select([(to_text(o), o) for o in options], value=self.initial,
                             allow_blank=False, compact=True)
        else:
            control = Input(to_text(self.initial), compact=True, select_on_focus=False)
        help_text = description(self.spec.path)
        control.tooltip = Text(help_text) if help_text else None      # never read as markup
        yield control
        yield Static("", classes="error", markup=False)     # messages quote values: [1, 2]

    @property
    def value(self) -> Any:
        return self.query_one("Input, Select").value

    @value.setter
    def value(self, value: Any) -> None:
        control = self.query_one("Input, Select")
        control.value = value if isinstance(control, Select) else to_text(value)

    def set_error(self, message: str | None) -> None:
        self.query_one(".error", Static).update(message or "")
        self.set_class(bool(message), "-invalid")

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self, event: Input.Changed | Select.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self, event.value))
