"""Training: darknet's detector training, the loop read top to bottom in train.py.

- train: train, step, compute_loss, make_optimizer, param_groups, torch_init_, darknet_init_,
  start_weights, evaluate (and, as before, the names below)
- inputs: head_kind - the .data, the cfg and the loader, checked before anything is written
- start: torch_init_, darknet_init_, start_weights, make_optimizer - the model a run starts from
- update: step - one iteration's passes and its optimizer step (or skip)
- saving: RunFiles, write_results - the weights, state and results a run writes
- schedule: learning_rate, schedule, Schedule - darknet's get_current_rate
- state: save_state, load_state - the training state beside _last, resume
- distributed: torchrun's process group, each rank's device, the mean over ranks
- signals: stop_on_signals, Stopped - SIGTERM/SIGHUP save as Ctrl-C does
- lint: lint - the cfg's training options that spoil a run, warned of before the first step

The submodules are imported on use (``from darkcfg.training import train``); this
file imports none of them.
"""
