"""[agent loop] Chat template -> token ids, incrementally per step: the one place tokenisation happens.

Token in, token out: the policy's sampled ids enter the context unchanged (never decoded and re-encoded);
only the template's own text around them (the first prompt, each observation turn) is tokenised here.

Tools: the env's OpenAI-style function schemas go to every apply_chat_template call as `tools=`, so the model
sees them as its template presents them (Qwen2.5: a Hermes <tools> block in the system message). A template that
ignores `tools=` (SmolLM2's, the tiny test model's ChatML) gets them as a system message written in that same
Hermes format instead (`hermes_system_message`), with a warning.
"""

import json
import warnings

from transformers import PreTrainedTokenizerBase

OBSERVATION_ROLES = ("user", "tool")
PROBE_TOOL = {"type": "function", "function": {"name": "probe_5f1d", "description": "", "parameters": {}}}


class Conversation:
    """The messages of one trajectory and the template text rendered so far.

    Lifecycle: `prompt_ids()` once, then alternate `add_action(...)` and `add_observation(...)`.
    `tools`: the env's tool schemas, rendered by the template (or as a Hermes system message, see the module doc).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, first_observation: str, tools: list[dict] | None = None):
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has no eos_token: the agent loop needs it as the end-of-turn token")
        self._tokenizer = tokenizer
        self._eos = tokenizer.eos_token
        self._eos_id = tokenizer.convert_tokens_to_ids(self._eos)
        self._messages = [{"role": "user", "content": first_observation}]
        # Given to every render, so each incremental render equals a full one.
        self._tools = list(tools) if tools and _renders_tools(tokenizer) else None
        if tools and self._tools is None:
            self._messages.insert(0, {"role": "system", "content": hermes_system_message(tools)})
        self._first_prompt = self._render(self._messages)
        # Template text covered by the ids handed out so far; each delta is taken against it.
        self._text = self._first_prompt
        self._awaiting_action = True
        self._tool_role: str | None = None  # the role tool results render as, found on the first one

    def prompt_ids(self) -> list[int]:
        """Ids of the first prompt: the template of [user: first_observation] plus the generation prompt."""
        return self._encode(self._first_prompt)

    def add_action(self, action_ids: list[int], finished: bool) -> tuple[str, list[int]]:
        """Record the policy's action; returns (action_text, extra_ids).

        extra_ids (not action tokens) close the assistant turn when the action did not end with the
        end-of-turn id itself: an action cut by max_tokens gets [eos id], so the next observation follows a
        well-formed turn. A finished action ending in eos gets [].
        """
        if not self._awaiting_action:
            raise RuntimeError("add_action called twice without an observation in between")
        ends_with_eos = bool(action_ids) and action_ids[-1] == self._eos_id
        body = action_ids[:-1] if ends_with_eos else action_ids
        action_text = self._tokenizer.decode(body, skip_special_tokens=True)
        # A finished action normally ends with eos; one that stopped on another stop id gets eos too,
        # because the template (and so the next delta) assumes the turn ends with it.
        extra_ids = [] if finished and ends_with_eos else [self._eos_id]
        self._messages.append({"role": "assistant", "content": action_text})
        self._text += action_text + self._eos
        self._awaiting_action = False
        return action_text, extra_ids

    def add_observation(self, observation: str, role: str = "user") -> list[int]:
        """Ids to append for the env's observation: the rest of the template through the next generation prompt.

        role "tool" renders a tool result in the template's `tool` role, as apply_chat_template would; a template
        that has no tool role (it fails on one, or drops its content) gets the result as a user message instead.
        """
        if self._awaiting_action:
            raise RuntimeError("add_observation called before the action it answers")
        if role not in OBSERVATION_ROLES:
            raise ValueError(f"observation role must be one of {OBSERVATION_ROLES}, got {role!r}")
        if role == "tool":
            if self._tool_role is None:
                self._tool_role = _tool_role(self._tokenizer)
            role = self._tool_role
        self._messages.append({"role": role, "content": observation})
        full = self._render(self._messages)
        if not full.startswith(self._text):
            at = next((i for i, (a, b) in enumerate(zip(full, self._text)) if a != b), min(len(full), len(self._text)))
            raise ValueError(
                "the chat template is not prefix-stable: rendering the conversation with a new observation "
                f"changes the text already rendered, from character {at}: {self._text[at : at + 40]!r} became "
                f"{full[at : at + 40]!r}. Incremental rendering needs a template that renders earlier messages "
                f"verbatim and ends assistant turns with the eos token {self._eos!r}."
            )
        # Deltas are taken on strings, and tokenised alone. They begin right after the end-of-turn token
        # and end with the generation prompt, so no BPE merge crosses a boundary of the ChatML-style
        # templates we use; test_incremental_render_matches_full_chat_template checks this per tokenizer.
        delta = full[len(self._text) :]
        self._text = full
        self._awaiting_action = True
        return self._encode(delta)

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self._tokenizer.apply_chat_template(
            messages, tools=self._tools, add_generation_prompt=True, tokenize=False
        )

    def _encode(self, text: str) -> list[int]:
        # The template already writes any BOS it wants as text; add_special_tokens would add a second one.
        return self._tokenizer.encode(text, add_special_tokens=False)


def _tool_role(tokenizer: PreTrainedTokenizerBase) -> str:
    """The role tool results render as: `tool` if the chat template shows a tool message's content, else `user`."""
    probe = "tool result 6e0c"
    messages = [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "call"},
        {"role": "tool", "content": probe},
    ]
    try:
        renders = probe in tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # templates reject unknown roles with raise_exception (a jinja TemplateError) or a KeyError
        renders = False
    if not renders:
        warnings.warn("the chat template has no tool role: tool results are rendered as user messages", stacklevel=3)
    return "tool" if renders else "user"


def _renders_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template shows `tools=`: a conversation renders differently with a probe tool than without."""
    messages = [{"role": "user", "content": "question"}]
    plain = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    try:
        renders = plain != tokenizer.apply_chat_template(
            messages, tools=[PROBE_TOOL], add_generation_prompt=True, tokenize=False
        )
    except Exception:  # a template may reject tools it cannot show
        renders = False
    if not renders:
        warnings.warn(
            "the chat template ignores tools=: the tool schemas are rendered as a Hermes-format system message",
            stacklevel=3,
        )
    return renders


def hermes_system_message(tools: list[dict]) -> str:
    """The tools as Qwen2.5's template writes them into its system message (Hermes format, <tool_call> replies),
    for templates that ignore tools=."""
    schemas = "".join("\n" + json.dumps(schema, ensure_ascii=False) for schema in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>{schemas}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
        "\n</tool_call>"
    )
