"""Message and metric keys shared by the ServerApp and the ClientApp.

The server never imports client code and vice versa; they agree only on these names.
"""

from typing import Final

# RecordDict entries
ARRAYS: Final = "arrays"
CONFIG: Final = "config"
METRICS: Final = "metrics"
STATUS: Final = "status"

# ConfigRecord sent with a train message
SERVER_ROUND: Final = "server-round"
#: Per-tensor clipping bounds (list[float], one per trainable tensor) for per-layer clipping
CLIP_BOUNDS: Final = "clip-bounds"

# MetricRecord replied by a client
CLIENT_ID: Final = "client-id"
NUM_EXAMPLES: Final = "num-examples"
TRAIN_LOSS: Final = "train-loss"
EPSILON: Final = "epsilon"
EPSILON_TOTAL: Final = "epsilon-total"
DELTA: Final = "delta"
NOISE_MULTIPLIER: Final = "noise-multiplier"
SAMPLE_RATE: Final = "sample-rate"
STEPS: Final = "steps"
TRAIN_SECONDS: Final = "train-seconds"

# ConfigRecord STATUS entries replied by a client
STATUS_CODE: Final = "code"
STATUS_REASON: Final = "reason"
STATUS_OK: Final = "ok"
STATUS_BUDGET_EXHAUSTED: Final = "budget-exhausted"

# Flower node_config keys (simulation sets partition-id / num-partitions itself)
NODE_PARTITION_ID: Final = "partition-id"
NODE_NUM_PARTITIONS: Final = "num-partitions"

# Per-node persistent state (context.state)
STATE_RECORD: Final = "fedsim-state"
STATE_LEDGER: Final = "ledger"

# Deployment node_config keys of a real site (see fedsim.deploy.site)
NODE_CLIENT_ID: Final = "client-id"
NODE_DATA_PATH: Final = "data-path"
NODE_DATA_FORMAT: Final = "data-format"
NODE_STATE_DIR: Final = "state-dir"
