"""This process as one worker of a local MultiWorkerMirroredStrategy cluster:
shared by the multi-worker programs of tests/scripts/ (the graph API, Keras 2
fit, cl.tf2), which tests/graph_mode/test_replicas.py and
tests/eager/test_replicas.py run as 2 processes on 127.0.0.1.
"""

import json
import os
import signal


def join_cluster(argv):
    """Sets this worker's TF_CONFIG from argv (task index, comma-separated
    ports) and a time bound; call it before TensorFlow is imported. Returns
    the task index."""
    signal.alarm(150)  # a worker never outlives its test, whatever happens
    task, ports = int(argv[1]), argv[2].split(",")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": task}})
    return task
