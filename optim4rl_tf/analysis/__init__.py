"""Agent-gradient analysis (docs/fidelity.md §8; paper Fig. 1, Fig. 5, Table 4) and robustness reports (Tables 5-7).

  * :mod:`optim4rl_tf.analysis.collect` -- flax-order flattening + sub-sampling of gradients, and the
    chunked on-disk gradient store (writer / reader);
  * :mod:`optim4rl_tf.analysis.supervised` -- the supervised collection run (§3.4 MNIST network, RMSProp);
  * :mod:`optim4rl_tf.analysis.gradients` -- 30-part split, log10 histograms, Wasserstein distances, Table 4;
  * :mod:`optim4rl_tf.analysis.robustness` -- Tables 5-7 runs and report.
"""
