"""Cards of the shipped optimizers (optim4rl_tf.eval.cards, launch/make_cards.py): made from measured results
on tasks a file never saw, the recommended rate by the documented rule, and read back by
``pretrained.card`` so that ``Optim4RL.from_pretrained`` runs at the card's rate."""

import json

import pytest

import optim4rl_tf
from conftest import run_command
from optim4rl_tf import pretrained
from optim4rl_tf.eval import cards


def best(lr, mean, works_at, diverged=0, ratio=None):
  return dict(lr=lr,
              mean=mean,
              low=None if mean is None else mean - 0.1,
              high=None if mean is None else mean + 0.1,
              diverged=diverged,
              works_at=works_at,
              ratio_to_adam_best=ratio)


def generalisation_numbers():
  """Catch (the catch file's own task, left out of its card) and two gridworlds it never saw."""
  return {
      "tasks": ["small_sparse_short", "small_sparse_long", "catch"],
      "command": "python launch/generalisation.py",
      "commit": "abc",
      "best": {
          "small_sparse_short": {
              "Optim4RL catch": best(3e-3, 0.9, [1e-3, 3e-3]),
              "Adam": best(3e-3, 1.0, [3e-3])
          },
          "small_sparse_long": {
              "Optim4RL catch": best(1e-3, None, [], diverged=5),
              "Adam": best(3e-3, 2.0, [3e-3])
          },
          "catch": {
              "Optim4RL catch": best(1e-3, 0.95, [1e-3]),
              "Adam": best(1e-3, 0.9, [1e-3])
          },
      }
  }


def cartpole_numbers():
  return {
      "command": "python examples/keras_cartpole_sweep.py",
      "commit": "def",
      "best": {
          "adam": dict(lr=3e-3, mean=400.0, ci90=[300.0, 480.0], works_at=[1e-3, 3e-3]),
          "optim4rl:catch": dict(lr=3e-3, mean=340.0, ci90=[300.0, 380.0], works_at=[3e-3]),
      }
  }


def test_the_recommended_rate_is_the_one_that_works_on_most_unseen_tasks_ties_to_the_meta_training_rate():
  entries = [dict(works_at=[1e-3, 3e-3], lr=3e-3), dict(works_at=[3e-3], lr=3e-3), dict(works_at=[], lr=1e-3)]
  assert cards.recommend(entries, meta_lr=1e-3) == (3e-3, 2, 3)
  tie = [dict(works_at=[1e-3], lr=1e-3), dict(works_at=[3e-3], lr=3e-3)]
  assert cards.recommend(tie, meta_lr=3e-3) == (3e-3, 1, 2)  # the rate it was meta-trained with
  assert cards.recommend(tie, meta_lr=3e-2) == (1e-3, 1, 2)  # else the smaller
  assert cards.recommend([dict(lr=3e-4)], meta_lr=1e-3) is None  # no rate grid measured


def test_a_card_leaves_out_the_files_own_tasks_counts_a_diverged_task_as_a_failure_and_names_its_sources():
  made = cards.build_cards(["catch"], generalisation=generalisation_numbers(), keras_cartpole=cartpole_numbers())
  card = made["catch"]
  assert [e["task"] for e in card["unseen"]] == ["small_sparse_short", "small_sparse_long", "CartPole-v1"]
  assert card["unseen"][0]["ratio_to_adam_best"] == pytest.approx(0.9)
  assert card["unseen"][1]["mean"] is None and card["unseen"][1]["ratio_to_adam_best"] is None
  assert card["unseen"][2]["ratio_to_adam_best"] == pytest.approx(0.85)
  # 3e-3 works on 2 of the 3 tasks measured at each rate (1e-3 on 1): recommended, though catch was
  # meta-trained at 1e-3; no agent clip during its meta-training.
  assert (card["learning_rate"], card["meta_training_lr"], card["clipvalue"]) == (3e-3, 1e-3, None)
  assert card["summary"].startswith("2 of 3 unseen tasks at >= 0.8x Adam's best")  # the diverged one fails
  assert sorted(card["sources"]) == ["generalisation", "keras_cartpole"]
  assert card["file_commit"] == pretrained.provenance("catch")["commit"]
  with pytest.raises(ValueError, match="no measurement of 'catch' on a task it never saw"):
    cards.build_cards(["catch"])


def test_a_keras_sweep_on_a_task_with_negative_returns_counts_from_its_floor_beside_cartpole():
  """Two Keras sweeps, CartPole-v1 and Acrobot-v1 (floor -500: a policy that never swings up): the Acrobot
  entry's ratio is (500 - 180) / (500 - 100) = 0.8, it counts among the card's unseen tasks, and both sweeps
  are named as sources."""
  acrobot = {
      "command": "python examples/keras_cartpole_sweep.py --env=Acrobot-v1",
      "commit": "abc",
      "env": "Acrobot-v1",
      "floor_return": -500.0,
      "best": {
          "adam": dict(lr=1e-3, mean=-100.0, ci90=[-120.0, -90.0], works_at=[1e-3]),
          "optim4rl:catch": dict(lr=3e-3, mean=-180.0, ci90=[-200.0, -160.0], works_at=[3e-3]),
      }
  }
  card = cards.build_cards(["catch"], keras_cartpole=[cartpole_numbers(), acrobot])["catch"]
  assert [e["task"] for e in card["unseen"]] == ["CartPole-v1", "Acrobot-v1"]
  assert card["unseen"][1]["ratio_to_adam_best"] == pytest.approx(0.8) and card["unseen"][1]["floor_return"] == -500
  assert "floor_return" not in card["unseen"][0]
  assert card["summary"].startswith("2 of 2 unseen tasks at >= 0.8x Adam's best")
  assert [s["commit"] for s in card["sources"]["keras_cartpole"]] == ["def", "abc"]


def test_from_pretrained_runs_at_the_rate_of_the_files_card_and_ignores_the_card_of_an_earlier_file(
    tmp_path, monkeypatch):
  path = tmp_path / "cards.json"
  monkeypatch.setattr(pretrained, "cards_path", lambda: str(path))
  lr_of = lambda opt: float(opt.learning_rate.numpy()) if hasattr(opt.learning_rate, "numpy") else opt.learning_rate
  assert pretrained.card("catch") is None  # no cards.json: the rate it was meta-trained with
  assert lr_of(optim4rl_tf.Optim4RL.from_pretrained("catch")) == pytest.approx(1e-3)
  card = cards.build_cards(["catch"], generalisation=generalisation_numbers(), keras_cartpole=cartpole_numbers())
  path.write_text(json.dumps(card))
  assert pretrained.card("catch")["learning_rate"] == 3e-3
  assert pretrained.recommended_settings("catch") == {"learning_rate": 3e-3, "clipvalue": None}
  assert lr_of(optim4rl_tf.Optim4RL.from_pretrained("catch")) == pytest.approx(3e-3)
  monkeypatch.setattr(pretrained, "RECOMMENDED", "catch")
  assert lr_of(optim4rl_tf.Optim4RL.from_pretrained()) == pytest.approx(3e-3)  # the recommended file's card
  assert lr_of(optim4rl_tf.Optim4RL.from_pretrained("catch", learning_rate=0.5)) == pytest.approx(0.5)
  card["catch"]["file_commit"] = "0" * 40  # made for another file of that name
  path.write_text(json.dumps(card))
  assert pretrained.card("catch") is None
  assert lr_of(optim4rl_tf.Optim4RL.from_pretrained("catch")) == pytest.approx(1e-3)
  with pytest.raises(ValueError, match="valid names"):
    pretrained.card("grid7")


def test_make_cards_writes_the_cards_keeps_the_others_and_refuses_bad_input_in_one_line(tmp_path):
  gen, cart, out = tmp_path / "gen.json", tmp_path / "cart.json", tmp_path / "cards.json"
  gen.write_text(json.dumps(generalisation_numbers()))
  cart.write_text(json.dumps(cartpole_numbers()))
  out.write_text(json.dumps({"grid6": {"name": "grid6", "kept": True}}))
  res = run_command(cards, "--names=catch", f"--generalisation={gen}", f"--keras_cartpole={cart}", f"--out={out}")
  assert res.returncode == 0, res.stderr
  assert "catch: 2 of 3 unseen tasks" in res.stdout and f"wrote {out}" in res.stdout
  written = json.loads(out.read_text())
  assert sorted(written) == ["catch", "grid6"] and written["grid6"] == {"name": "grid6", "kept": True}
  assert written["catch"]["learning_rate"] == 3e-3
  for args, match in ((["--names=grid7"], "--names: grid7 not shipped here"),
                      ([f"--generalisation={tmp_path / 'missing.json'}"], "--generalisation: cannot read")):
    res = run_command(cards, *args, f"--out={tmp_path / 'other.json'}")
    assert res.returncode == 2 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "other.json").exists()


def test_a_figure4_entry_reads_its_rate_from_the_label_or_from_a_one_rate_run_folder():
  report = {
      "panels": [{
          "task":
              "walker2d",
          "sources": [{
              "label": "Optim4RL catch",
              "selected": {
                  "configuration": "default",
                  "mean": 870.0,
                  "ci": {
                      "low": 638.0,
                      "high": 997.0
                  },
                  "workdirs": ["runs/fig4/test_optim4rl_catch_walker2d_lrs/lr0.003"]
              }
          }, {
              "label": "Adam",
              "selected": {
                  "configuration": "optimizer.learning_rate=0.001",
                  "mean": 938.0,
                  "ci": {
                      "low": 887.0,
                      "high": 985.0
                  },
                  "workdirs": ["runs/fig4/x/lr0.001"]
              }
          }]
      }]
  }
  (entry,) = cards.from_figure4("catch", report)
  assert entry["lr"] == 0.003 and entry["adam_lr"] == 0.001
  assert abs(entry["ratio_to_adam_best"] - 870.0 / 938.0) < 1e-12
  report["panels"][0]["sources"][0]["selected"]["workdirs"] = ["runs/elsewhere"]  # no rate anywhere: None
  assert cards.from_figure4("catch", report)[0]["lr"] is None


def figure4_report(task, label, mean, configuration):
  return {
      "panels": [{
          "task":
              task,
          "sources": [{
              "label": label,
              "selected": {
                  "configuration": configuration,
                  "mean": mean,
                  "ci": {
                      "low": mean - 10.0,
                      "high": mean + 10.0
                  },
                  "workdirs": []
              }
          }]
      }]
  }


def test_a_file_tested_on_its_own_is_compared_with_the_adam_of_an_earlier_figure4_report():
  adam_report = figure4_report("walker2d", "Adam", 900.0, "optimizer.learning_rate=0.001")
  adam_report["panels"][0]["sources"].append(
      figure4_report("walker2d", "Optim4RL grid6", 500.0, "optimizer.learning_rate=0.003")["panels"][0]["sources"][0])
  mine = figure4_report("walker2d", "Optim4RL catch", 990.0, "optimizer.learning_rate=0.0001")
  (entry,) = cards.from_figure4("catch", mine, adam_report)
  assert (entry["task"], entry["lr"], entry["adam_lr"]) == ("walker2d", 1e-4, 1e-3)
  assert entry["ratio_to_adam_best"] == pytest.approx(990.0 / 900.0)
  assert cards.from_figure4("catch", adam_report) == []
  # The first report that has a label wins: a later report's Adam does not replace an earlier one's.
  later = figure4_report("walker2d", "Adam", 100.0, "optimizer.learning_rate=0.003")
  assert cards.from_figure4("catch", mine, adam_report, later)[0]["adam_best"] == 900.0
  made = cards.build_cards(["catch"], figure4=[mine, dict(adam_report, title="Adam's")])
  assert [e["task"] for e in made["catch"]["unseen"]] == ["walker2d"]
  assert made["catch"]["sources"]["figure4_cpu"] == [{}, {"title": "Adam's"}]


def test_a_cartpole_sweep_of_a_path_counts_for_the_shipped_file_with_the_same_meta_parameters(tmp_path):
  import shutil
  same, other = tmp_path / "same.npz", tmp_path / "other.npz"
  shutil.copy(pretrained.path("catch"), same)
  shutil.copy(pretrained.path("grid6"), other)
  numbers = cartpole_numbers()
  numbers["best"].pop("optim4rl:catch")
  numbers["best"][f"optim4rl:{other}"] = dict(lr=1e-3, mean=100.0, ci90=[90.0, 110.0], works_at=[])
  assert cards.from_keras_sweep("catch", numbers) == []
  numbers["best"][f"optim4rl:{same}"] = dict(lr=3e-4, mean=200.0, ci90=[190.0, 210.0], works_at=[3e-4])
  (entry,) = cards.from_keras_sweep("catch", numbers)
  assert (entry["lr"], entry["mean"], entry["works_at"]) == (3e-4, 200.0, [3e-4])
  assert entry["ratio_to_adam_best"] == pytest.approx(0.5)
  (entry,) = cards.from_keras_sweep("grid6", numbers)
  assert entry["mean"] == 100.0
