"""Training and evaluation: strategy, data, schedules, loop (TF Model Garden layout).

`python -m sknet_keras.trainers.train` and `python -m sknet_keras.trainers.evaluate`.
"""
