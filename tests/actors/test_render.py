"""Incremental chat-template rendering equals rendering the whole conversation at once, per tokenizer."""

import copy
import warnings

import pytest
from transformers import AutoTokenizer

from actors.render import Conversation, hermes_system_message
from cluster.models import resolve_model

OBSERVATIONS = [
    "Find the exit. Room 1. Doors: red, blue. The red door is open.",
    "You walk through the red door.\nRoom 2. Doors: green, white.",
    "The floor is icy: you slip back into room 2.",
]
ACTIONS = ["red", " I take the green door", "\nwhite!"]


@pytest.fixture(scope="module", params=["tiny-random", "smollm2-135m-instruct"])
def tokenizer(request):
    return AutoTokenizer.from_pretrained(resolve_model(request.param))


def full_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def test_incremental_render_matches_full_chat_template(tokenizer):
    conversation = Conversation(tokenizer, OBSERVATIONS[0])
    ids = conversation.prompt_ids()
    messages = [{"role": "user", "content": OBSERVATIONS[0]}]
    for action, observation in zip(ACTIONS, OBSERVATIONS[1:] + ["Time is up."]):
        action_ids = tokenizer.encode(action + tokenizer.eos_token, add_special_tokens=False)
        action_text, extra_ids = conversation.add_action(action_ids, finished=True)
        assert (action_text, extra_ids) == (action, [])
        ids += action_ids + conversation.add_observation(observation)
        messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
    assert ids == full_ids(tokenizer, messages)


def test_prompt_ids_are_the_first_generation_prompt(tokenizer):
    conversation = Conversation(tokenizer, OBSERVATIONS[0])
    assert conversation.prompt_ids() == full_ids(tokenizer, [{"role": "user", "content": OBSERVATIONS[0]}])


def test_truncated_action_gets_eos_as_extra_id(tokenizer):
    conversation = Conversation(tokenizer, OBSERVATIONS[0])
    action_ids = tokenizer.encode("I take the re", add_special_tokens=False)  # cut by max_tokens: no eos
    action_text, extra_ids = conversation.add_action(action_ids, finished=False)
    assert action_text == "I take the re"
    assert extra_ids == [tokenizer.eos_token_id]
    ids = conversation.prompt_ids() + action_ids + extra_ids + conversation.add_observation(OBSERVATIONS[1])
    messages = [
        {"role": "user", "content": OBSERVATIONS[0]},
        {"role": "assistant", "content": "I take the re"},
        {"role": "user", "content": OBSERVATIONS[1]},
    ]
    assert ids == full_ids(tokenizer, messages)


def test_template_that_rewrites_history_is_rejected(tokenizer):
    # A template that trims message content renders "  red" differently once it is history.
    stripping = copy.deepcopy(tokenizer)
    stripping.chat_template = tokenizer.chat_template.replace("message['content']", "message['content'] | trim")
    conversation = Conversation(stripping, OBSERVATIONS[0])
    conversation.add_action(tokenizer.encode("  red", add_special_tokens=False), finished=False)
    with pytest.raises(ValueError, match="not prefix-stable"):
        conversation.add_observation(OBSERVATIONS[1])


def test_tool_observations_render_in_the_tool_role_like_the_full_chat_template(tokenizer):
    tool_call = '<tool_call>{"name": "get_price", "arguments": {"item": "lamp"}}</tool_call>'
    steps = [(tool_call, '{"item": "lamp", "unit_price": 12}', "tool"), ("no call", "No tool call found.", "user")]
    steps.append((tool_call, '{"error": "service unavailable, try again"}', "tool"))
    conversation = Conversation(tokenizer, OBSERVATIONS[0])
    ids = conversation.prompt_ids()
    messages = [{"role": "user", "content": OBSERVATIONS[0]}]
    for action, observation, role in steps:
        action_ids = tokenizer.encode(action + tokenizer.eos_token, add_special_tokens=False)
        conversation.add_action(action_ids, finished=True)
        ids += action_ids + conversation.add_observation(observation, role=role)
        messages += [{"role": "assistant", "content": action}, {"role": role, "content": observation}]
    assert "<|im_start|>tool\n" in tokenizer.decode(ids)
    assert ids == full_ids(tokenizer, messages)


def test_template_without_tool_role_renders_tool_results_as_user(tokenizer):
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = (
        "{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}"
        "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}{% endfor %}" + tokenizer.chat_template
    )
    conversation = Conversation(strict, OBSERVATIONS[0])
    action_ids = tokenizer.encode("call" + tokenizer.eos_token, add_special_tokens=False)
    conversation.add_action(action_ids, finished=True)
    with pytest.warns(UserWarning, match="no tool role"):
        ids = conversation.prompt_ids() + action_ids + conversation.add_observation("42", role="tool")
    messages = [
        {"role": "user", "content": OBSERVATIONS[0]},
        {"role": "assistant", "content": "call"},
        {"role": "user", "content": "42"},
    ]
    assert ids == full_ids(strict, messages)


def test_unknown_observation_role_is_rejected(tokenizer):
    conversation = Conversation(tokenizer, OBSERVATIONS[0])
    conversation.add_action(tokenizer.encode("red", add_special_tokens=False), finished=False)
    with pytest.raises(ValueError, match="observation role must be one of"):
        conversation.add_observation(OBSERVATIONS[1], role="system")


# Qwen2.5-Instruct's chat template (tools in a Hermes system message, tool results as <tool_response> in a user
# turn), for a template that renders tools=; neither built-in model's template does.
QWEN25_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}{%- endif %}"
    '{{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}'
    '{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}'
    '{{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within '
    '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    '<args-json-object>}\\n</tool_call><|im_end|>\\n" }}'
    "{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}{%- endif %}"
    "{%- for message in messages %}"
    '{%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}'
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    '{%- elif message.role == "tool" %}'
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_price",
            "description": "The unit price of an item.",
            "parameters": {
                "type": "object",
                "properties": {"item": {"type": "string", "description": "the item's name"}},
                "required": ["item"],
            },
        },
    }
]
TOOL_STEPS = [
    ('<tool_call>{"name": "get_price", "arguments": {"item": "lamp"}}</tool_call>', '{"unit_price": 12}', "tool"),
    ("no call", "No tool call found.", "user"),
    ('<tool_call>{"name": "get_price", "arguments": {"item": "mug"}}</tool_call>', '{"unit_price": 3}', "tool"),
]


def render_steps(conversation: Conversation, tokenizer, steps) -> tuple[list[int], list[dict[str, str]]]:
    """Ids of the conversation rendered step by step, and its messages after the first."""
    ids, messages = conversation.prompt_ids(), []
    for action, observation, role in steps:
        action_ids = tokenizer.encode(action + tokenizer.eos_token, add_special_tokens=False)
        conversation.add_action(action_ids, finished=True)
        ids += action_ids + conversation.add_observation(observation, role=role)
        messages += [{"role": "assistant", "content": action}, {"role": role, "content": observation}]
    return ids, messages


def test_tools_render_through_a_template_that_supports_them_like_the_full_chat_template(tokenizer):
    qwen = copy.deepcopy(tokenizer)
    qwen.chat_template = QWEN25_TEMPLATE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither fallback (tools, tool role) is taken
        ids, messages = render_steps(Conversation(qwen, OBSERVATIONS[0], tools=TOOLS), qwen, TOOL_STEPS)
    messages = [{"role": "user", "content": OBSERVATIONS[0]}] + messages
    full = qwen.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert ids == qwen.encode(full, add_special_tokens=False)
    assert full.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n"
        f"{hermes_system_message(TOOLS)}<|im_end|>\n"  # the fallback writes exactly Qwen2.5's tools text
    )
    assert full.count("<tool_response>\n") == 2


def test_template_that_ignores_tools_gets_them_as_a_hermes_system_message(tokenizer):
    with pytest.warns(UserWarning, match="ignores tools="):  # tiny-random's and SmolLM2's templates ignore them
        conversation = Conversation(tokenizer, OBSERVATIONS[0], tools=TOOLS)
    ids, messages = render_steps(conversation, tokenizer, TOOL_STEPS)
    system = {"role": "system", "content": hermes_system_message(TOOLS)}
    assert ids == full_ids(tokenizer, [system, {"role": "user", "content": OBSERVATIONS[0]}] + messages)
    assert hermes_system_message(TOOLS) == (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "get_price", "description": "The unit price of an item.", '
        '"parameters": {"type": "object", "properties": {"item": {"type": "string", "description": '
        '"the item\'s name"}}, "required": ["item"]}}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
        "<args-json-object>}\n</tool_call>"
    )
