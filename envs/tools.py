"""[env] Tools (`tools`): a multi-step tool-calling env. The policy looks facts up with JSON tool calls and submits.

One instance of `envs.toolkit.ToolEnv`: four Python functions are its tools, their docstrings their schemas, which
reach the model through its chat template (`envs/toolkit.py`). A task asks for the total price of one order:
get_order gives its item and quantity, get_price the item's unit price, calculate does arithmetic, submit ends
the task. Calls use the Hermes format, `<tool_call>{"name": "get_price", "arguments": {"item": "lamp"}}</tool_call>`
(a bare JSON object counts too); a result is an observation with role "tool". The lookup tools fail at random
("service unavailable, try again"; draws seeded by the env seed) and every tool call takes latency_s. Reward:
useful_call_reward for the first successful lookup of the order and of its item's price, the rest of 1.0 for the
right answer, so a solved task's outcome is 1.0.
"""

import ast
import math
import operator
import random
import time

from envs.base import Task
from envs.tasks import split_tasks
from envs.toolkit import ToolEnv, ToolResult, tool

ITEMS = ("lamp", "kettle", "chair", "desk", "mug", "towel", "pillow", "clock", "vase", "rug")
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class Tools(ToolEnv):
    def __init__(
        self,
        seed: int = 0,
        max_steps: int = 8,
        num_tasks: int = 512,
        failure_rate: float = 0.2,
        latency_s: float = 0.01,
        useful_call_reward: float = 0.1,
        num_orders: int = 3,
    ):
        if not 0.0 <= failure_rate < 1.0:
            raise ValueError(f"tools: failure_rate must be in [0, 1), got {failure_rate}")
        if latency_s < 0 or not 0.0 <= useful_call_reward <= 0.5:
            raise ValueError(
                f"tools: need latency_s >= 0 and useful_call_reward in [0, 0.5], got {latency_s}, {useful_call_reward}"
            )
        if not 1 <= num_orders <= 10:
            raise ValueError(f"tools: num_orders must be in 1..10, got {num_orders}")
        tools = [tool(self.get_order), tool(self.get_price), tool(self.calculate), tool(self.submit)]
        super().__init__(tools, max_steps=max_steps)
        self.num_tasks, self.num_orders = num_tasks, num_orders
        self.failure_rate, self.latency_s, self.useful_call_reward = failure_rate, latency_s, useful_call_reward
        self._luck = random.Random(seed)  # tool failures; the task's facts come from the task seed
        self._orders: dict[str, tuple[str, int]] = {}
        self._prices: dict[str, int] = {}
        self._asked = ""
        self._earned, self._credited = 0.0, set()

    def tasks(self, split: str) -> list[Task]:
        return split_tasks("tools", split, self.num_tasks)

    def start(self, task: Task) -> str:
        layout = random.Random(task.seed)
        self._prices = {item: layout.randint(2, 40) for item in ITEMS}
        ids = layout.sample(range(10, 100), self.num_orders)
        self._orders = {f"{layout.choice('ABCDEFGH')}-{i}": (layout.choice(ITEMS), layout.randint(2, 9)) for i in ids}
        self._asked = layout.choice(sorted(self._orders))
        self._earned, self._credited = 0.0, set()
        return (
            f"What is the total price of order {self._asked} (its quantity times the item's unit price)? "
            "Use the tools, one call per turn, e.g. "
            f'<tool_call>{{"name": "get_order", "arguments": {{"order_id": "{self._asked}"}}}}</tool_call>'
        )

    def get_order(self, order_id: str) -> ToolResult:
        """The item and quantity of an order.

        Args:
            order_id: the order's id, e.g. "C-22"
        """
        if self._unavailable():
            return ToolResult({"error": "service unavailable, try again"})
        order_id = order_id.strip()
        if order_id not in self._orders:
            return ToolResult({"error": f"no order {order_id!r}"})
        item, quantity = self._orders[order_id]
        reward = self._credit("order", order_id == self._asked)
        return ToolResult({"order_id": order_id, "item": item, "quantity": quantity}, reward)

    def get_price(self, item: str) -> ToolResult:
        """The unit price of an item.

        Args:
            item: the item's name, e.g. "lamp"
        """
        if self._unavailable():
            return ToolResult({"error": "service unavailable, try again"})
        name = item.strip().lower()
        if name not in self._prices:
            return ToolResult({"error": f"no item {item.strip()!r}"})
        reward = self._credit("price", name == self._orders[self._asked][0])
        return ToolResult({"item": name, "unit_price": self._prices[name]}, reward)

    def calculate(self, expression: str) -> dict:
        """Evaluate arithmetic: numbers, + - * / and parentheses.

        Args:
            expression: the arithmetic, e.g. "3 * 12"
        """
        time.sleep(self.latency_s)
        return {"result": arithmetic(expression.strip())}

    def submit(self, answer: float) -> ToolResult:
        """Give the final answer; ends the task.

        Args:
            answer: the total price of the order
        """
        time.sleep(self.latency_s)
        item, quantity = self._orders[self._asked]
        total = quantity * self._prices[item]
        if abs(answer - total) < 1e-6:
            return ToolResult({"result": "correct"}, 1.0 - self._earned, done=True, success=True)
        return ToolResult({"result": f"wrong: order {self._asked} costs {total}"}, done=True, success=False)

    def _unavailable(self) -> bool:
        """One call of the flaky lookup service: latency_s, and a seeded failure with probability failure_rate."""
        time.sleep(self.latency_s)
        return self._luck.random() < self.failure_rate

    def _credit(self, what: str, useful: bool) -> float:
        """useful_call_reward the first time `what` is looked up for the asked order, else 0."""
        if not useful or what in self._credited:
            return 0.0
        self._credited.add(what)
        self._earned += self.useful_call_reward
        return self.useful_call_reward


def arithmetic(expression: str) -> float:
    """The value of an arithmetic expression of numbers, + - * / and parentheses; ValueError otherwise."""
    try:
        return _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ZeroDivisionError, RecursionError) as error:
        raise ValueError(f"cannot calculate {expression!r}: {error}") from error


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float) and math.isfinite(node.value):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError(f"calculate understands numbers, + - * / and parentheses, not {ast.unparse(node)!r}")
