"""Lecture questions: every option answers with its own feedback; numbers within a tolerance."""
import nbformat
import pytest
from nbclient import NotebookClient

from retrievalkit.teaching import quiz
from retrievalkit.teaching.channels import SteppedKernelManager


def gem_question():
    return quiz.choice("GeM with p = 1 is ...", {
        "max pooling": (False, "That is the limit as p grows."),
        "average pooling": (True, "The first root of the mean of x is the mean."),
        "sum pooling": (False, "GeM averages x^p: it does not sum."),
    })


def test_each_option_gives_its_own_feedback_by_text_or_letter():
    q = gem_question()
    assert q.answer("average pooling") == "✓ Right. The first root of the mean of x is the mean."
    assert q.answer("b") == q.answer("B") == q.answer("average pooling")
    assert q.answer("a") == "✗ Not quite. That is the limit as p grows."
    assert q.answer("sum pooling") == "✗ Not quite. GeM averages x^p: it does not sum."
    with pytest.raises(ValueError, match="picked must be one of the options"):
        q.answer("d")


def test_a_number_is_right_within_tol_and_a_known_wrong_value_names_its_mistake():
    q = quiz.number("AP of relevant ranks 1 and 3 among 2 relevant?", 5 / 6, 1e-3, "(1/1 + 2/3) / 2 = 5/6.",
                    {0.75: "That is the trapezoid rule's value.", 2 / 3: "Only the precision at rank 3."})
    assert q.answer("5/6").startswith("✓ Right.") and q.answer(0.8333).startswith("✓ Right.")
    assert q.answer("83.33%").startswith("✓ Right.")
    assert q.answer(0.75) == "✗ Not quite. That is the trapezoid rule's value."
    assert q.answer("0,6667") == "✗ Not quite. Only the precision at rank 3."
    assert q.answer(0.5).startswith("✗ Not quite. Work it through")
    assert q.answer("five") == "✗ 'five' is not a number: type a number such as 0.25 or 1/4."
    assert q.answer("1/0") == "✗ '1/0' is not a number: type a number such as 0.25 or 1/4."


@pytest.mark.parametrize("make, message", [
    (lambda: quiz.choice("", {"a": (True, "x"), "b": (False, "y")}), "prompt"),
    (lambda: quiz.choice("q", {"a": (True, "x")}), "at least two"),
    (lambda: quiz.choice("q", {"a": (False, "x"), "b": (False, "y")}), "at least one option as right"),
    (lambda: quiz.choice("q", {"a": (True, ""), "b": (False, "y")}), r"options\['a'\]"),
    (lambda: quiz.number("q", float("nan"), 0.1, "w"), "value must be a finite number"),
    (lambda: quiz.number("q", 1.0, 0, "w"), "tol must be a positive number"),
    (lambda: quiz.number("q", 1.0, 0.1, "w", {1.05: "no"}), "mistakes must not list"),
])
def test_a_badly_written_question_is_refused_naming_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_question_cell_displays_a_widget_with_a_plain_text_form():
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "from retrievalkit.teaching import quiz\n"
        "quiz.choice('GeM with p = 1 is ...', {'max pooling': (False, 'no'), 'average pooling': (True, 'yes')})"))
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                   kernel_manager_class=SteppedKernelManager).execute()
    (out,) = nb.cells[0].outputs
    assert out["data"]["text/plain"] == "Question. GeM with p = 1 is ...\na) max pooling\nb) average pooling"
    model = out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert state[model]["model_name"] == "VBoxModel"


def test_the_check_button_shows_the_feedback_of_the_picked_option():
    import ipywidgets as widgets

    q = gem_question()
    buttons = widgets.RadioButtons(options=list(q.options), value=None)
    box = quiz._ask(q.prompt, buttons, lambda: None if buttons.value is None else q.answer(buttons.value))
    _, _, check, out = box.children
    check.click()
    assert out.value == "<i>Pick an answer first.</i>"
    buttons.value = "max pooling"
    check.click()
    assert out.value == "✗ Not quite. That is the limit as p grows."
