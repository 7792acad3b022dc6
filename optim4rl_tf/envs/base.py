"""The environment protocol: what every batched, in-graph environment of the package provides.

The gridworlds (``gridworld.GridWorld``), Catch (``catch.Catch``) and the Brax bridge's in-graph face
(``brax_bridge.BraxGraphEnv``, from ``BraxEnv.graph_env()``) satisfy :class:`Env`; the acting module
(``optim4rl_tf.agents.acting``) and the trainers use nothing else of an environment. Like Brax's
``envs/base.py`` ``Env`` (``reset(rng) -> State``, ``step(State, action) -> State``), an env holds no state of
its own: a batch of ``num_envs`` (N) environments lives in the ``state`` value the functions pass around, so
whole rollouts trace into one ``tf.function`` / ``tf.while_loop``.

Shapes (N = ``num_envs``):

  * ``reset(seed) -> state``: fresh episodes for all N envs. ``seed`` carries the reset's randomness in the
    env's own form: a stateless key int32 [2] (or a Python int) for the native envs; one int32 seed per unit,
    shape [U] with U dividing N, for Brax (unit u's envs depend only on its seed).
  * ``observe(state) -> obs``: float32 [N, *obs_shape].
  * ``step(state, action, seed) -> (state, obs, reward, done)``: one step of all N envs with auto-reset (an env
    whose episode ended is reset within the step, and ``obs`` is then its reset observation); ``obs`` float32
    [N, *obs_shape], ``reward`` float32 [N] (multiplied by ``reward_scale``), ``done`` float32 [N] (1.0 where
    the episode ended, by the task or by the time limit ``horizon``). ``seed`` is the step's stateless key
    int32 [2]; an env whose randomness lives in its state (Brax) ignores it.
  * ``action``: int32 [N] in [0, ``num_actions``) for a discrete env (:class:`DiscreteEnv`); float32
    [N, ``action_size``] in [-1, 1] for a continuous one (:class:`ContinuousEnv`).

Attributes: ``name`` (the registry's task name), ``num_envs``, ``obs_shape`` (tuple, one observation),
``horizon`` (the most steps an episode lasts), ``reward_scale``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Env(Protocol):
  """A batch of ``num_envs`` environments as pure in-graph functions; see the module docstring."""

  name: str
  num_envs: int
  obs_shape: tuple
  horizon: int
  reward_scale: float

  def reset(self, seed) -> Any:
    """Fresh state of all ``num_envs`` envs."""

  def observe(self, state) -> Any:
    """float32 [N, *obs_shape]."""

  def step(self, state, action, seed) -> tuple:
    """(state, obs [N, *obs_shape], reward [N], done [N]) with auto-reset; see the module docstring."""


@runtime_checkable
class DiscreteEnv(Env, Protocol):
  """An :class:`Env` whose actions are int32 [N] in [0, ``num_actions``) (gridworlds, Catch)."""

  num_actions: int


@runtime_checkable
class ContinuousEnv(Env, Protocol):
  """An :class:`Env` whose actions are float32 [N, ``action_size``] in [-1, 1] (Brax)."""

  action_size: int
