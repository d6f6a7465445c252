"""The tool-calling env: a scripted policy solves a task, seeded tool failures, explanatory bad calls, roles.

The toolkit it is built on (parsing, schemas, argument checks, timeouts) is tested in test_toolkit.py."""

import json

import pytest

from envs import available, make_env
from envs.tools import arithmetic

TOOL_NAMES = ["get_order", "get_price", "calculate", "submit"]


def call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def facts(env, task) -> tuple[str, str, int, int]:
    """(asked order id, item, quantity, unit price) of the task, read from the env's layout."""
    env.reset(task)
    item, quantity = env._orders[env._asked]
    return env._asked, item, quantity, env._prices[item]


def test_scripted_policy_solves_a_task_with_outcome_one():
    env = make_env("tools", failure_rate=0.0, latency_s=0.0)
    task = env.tasks("train")[0]
    order_id, item, quantity, price = facts(make_env("tools"), task)
    observation = env.reset(task)
    assert order_id in observation and [t["function"]["name"] for t in env.tools()] == TOOL_NAMES
    assert env.tools()[1]["function"]["parameters"] == {
        "type": "object",
        "properties": {"item": {"type": "string", "description": 'the item\'s name, e.g. "lamp"'}},
        "required": ["item"],
    }
    script = [
        call("get_order", order_id=order_id),
        f"I need the price.\n{call('get_price', item=item)}",
        call("calculate", expression=f"{quantity} * {price}"),
        call("submit", answer=quantity * price),
    ]
    results = [env.step(action) for action in script]
    assert json.loads(results[0].observation) == {"order_id": order_id, "item": item, "quantity": quantity}
    assert json.loads(results[2].observation) == {"result": quantity * price}
    assert [r.reward for r in results] == pytest.approx([0.1, 0.1, 0.0, 0.8])
    assert sum(r.reward for r in results) == pytest.approx(1.0)
    assert [r.done for r in results] == [False, False, False, True]
    assert (results[-1].success, results[-1].info) == (True, {})
    assert [r.role for r in results] == ["tool"] * 4 and [r.success for r in results[:3]] == [None] * 3


def test_wrong_answer_ends_without_success_and_keeps_only_partial_credit():
    env = make_env("tools", failure_rate=0.0, latency_s=0.0)
    task = env.tasks("train")[1]
    order_id, *_ = facts(make_env("tools"), task)
    env.reset(task)
    first, last = env.step(call("get_order", order_id=order_id)), env.step(call("submit", answer="-1"))
    assert last.done and last.success is False and "wrong" in last.observation
    assert first.reward + last.reward == pytest.approx(0.1)


def _transcript(seed: int) -> list[str]:
    env = make_env("tools", seed=seed, failure_rate=0.5, latency_s=0.0, max_steps=20)
    task = env.tasks("train")[2]
    order_id, *_ = facts(make_env("tools"), task)
    env.reset(task)
    return [env.step(call("get_order", order_id=order_id)).observation for _ in range(12)]


def test_tool_failures_are_seeded_and_reproducible():
    first, again, other = _transcript(3), _transcript(3), _transcript(4)
    assert first == again and first != other
    failures = [json.loads(observation).get("error") for observation in first]
    assert "service unavailable, try again" in failures and None in failures


@pytest.mark.parametrize(
    "action, role, says",
    [
        ("the answer is 42", "user", "No tool call found"),
        ('<tool_call>{"name": "get_order", "arguments": {"order_id": }</tool_call>', "user", "Malformed JSON"),
        ('{"tool": "get_order"}', "user", 'needs "name"'),
        (call("fly", to="moon"), "tool", "unknown tool 'fly'; tools: get_order, get_price, calculate, submit"),
        (call("get_price", product="lamp"), "tool", 'get_price takes arguments {\\"item\\": string}'),
        (call("submit", answer="many"), "tool", "submit takes arguments"),
        (call("get_price", product="lamp"), "tool", "(missing 'item', unexpected 'product')"),
        (call("calculate", expression="__import__('os')"), "tool", "calculate raised ValueError: calculate"),
    ],
)
def test_malformed_calls_are_normal_steps_that_say_what_is_wrong(action, role, says):
    env = make_env("tools", failure_rate=0.0, latency_s=0.0)
    env.reset(env.tasks("train")[0])
    result = env.step(action)
    assert not result.done and result.reward == 0.0 and (result.role, result.success) == (role, None)
    assert says in result.observation


def test_quoted_numbers_and_padded_strings_are_accepted_and_calculate_evaluates_arithmetic():
    env = make_env("tools", failure_rate=0.0, latency_s=0.0)
    task = env.tasks("train")[1]
    order_id, item, quantity, price = facts(make_env("tools"), task)
    env.reset(task)
    assert json.loads(env.step(call("get_price", item=f" {item.upper()} ")).observation)["unit_price"] == price
    assert env.step(call("submit", answer=str(quantity * price))).success is True
    assert arithmetic("(2 + 3) * 4 / 2") == 10.0


def test_max_steps_ends_the_trajectory_without_success():
    env = make_env("tools", max_steps=2, failure_rate=0.0, latency_s=0.0)
    env.reset(env.tasks("train")[0])
    assert not env.step("hello").done
    last = env.step("hello")
    assert last.done and (last.success, last.role) == (False, "user") and "Time is up." in last.observation


def test_splits_are_disjoint_and_bad_options_are_rejected():
    env = make_env("tools", num_tasks=32)
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert "tools" in available() and train == env.tasks("train") and len(held_out) == 32
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}
    with pytest.raises(ValueError, match="failure_rate"):
        make_env("tools", failure_rate=1.5)
