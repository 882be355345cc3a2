"""Engine layer: the input pipeline, the training loop (train_one_epoch / evaluate / fit) and prediction (torch).
"""
