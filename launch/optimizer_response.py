"""An optimizer's step size against the gradient's scale and signal-to-noise ratio (what a learned optimizer does
with the gradients of your task).

  python launch/optimizer_response.py --optimizers=inverted_pendulum,catch,grid6,adam --out=runs/response
  optim4rl-optimizer-response ...                                         # the same, installed with pip

A shell around optim4rl_tf.analysis.response_command (its flags and outputs: see that module).
"""
from optim4rl_tf.analysis import response_command

if __name__ == "__main__":
  response_command.console()
