"""Writes the cards of the shipped learned optimizers (optim4rl_tf/pretrained/cards.json) from measured results.

  python launch/make_cards.py                      # from results/generalisation, results/keras_cartpole
  python launch/make_cards.py --names=grid6 --figure4=runs/fig4_cpu/report/report.json

A shell around optim4rl_tf.eval.cards (the inputs, the recommended learning rate: see that module).
"""
from optim4rl_tf.eval import cards

if __name__ == "__main__":
  cards.console()
