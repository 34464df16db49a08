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
#: Train config, per client: its server-side selection events so far (PrivacyLedger JSON)
#: and the ε the coming round's private selection will charge it (SecProbe), so that the
#: client's dp.max_epsilon check covers them
SELECTION_LEDGER: Final = "selection-ledger"
SELECTION_EPSILON_AHEAD: Final = "selection-epsilon-ahead"
#: Train config: the coordinator's fedsim version and config-schema hash; a site trains
#: only when both equal its own (:mod:`fedsim.versions`)
FEDSIM_VERSION: Final = "fedsim-version"
CONFIG_SCHEMA: Final = "config-schema"

# MetricRecord replied by a client
CLIENT_ID: Final = "client-id"
NUM_EXAMPLES: Final = "num-examples"
TRAIN_LOSS: Final = "train-loss"
EPSILON: Final = "epsilon"
EPSILON_TOTAL: Final = "epsilon-total"
DELTA: Final = "delta"
#: The neighbouring relation of the reply's ε: an int code of :data:`RELATION_NAMES`
#: (MetricRecord values are numbers)
RELATION: Final = "relation"
RELATION_CODES: Final = {"replace_one": 1, "add_remove": 2}
RELATION_NAMES: Final = {v: k for k, v in RELATION_CODES.items()}
NOISE_MULTIPLIER: Final = "noise-multiplier"
SAMPLE_RATE: Final = "sample-rate"
STEPS: Final = "steps"
TRAIN_SECONDS: Final = "train-seconds"
#: A pooled node's warm-up reply: its place in the order in which the simulation engine
#: takes the nodes' messages (Flower's ``partition-id`` of the node)
NODE_ORDER: Final = "node-order"
#: Always 1: the aggregation weight under central DP (a uniform mean of clipped updates)
UNIT_WEIGHT: Final = "unit-weight"

#: DP-released valuation (mean of clipped scores), its variance (VoG) and the ε it spent
VALUATION: Final = "valuation"
VALUATION_VARIANCE: Final = "valuation-variance"
VALUATION_EPSILON: Final = "valuation-epsilon"


def extra_valuation(metric: str) -> str:
    """Key of the DP valuation of a ``valuation.report_metrics`` entry."""
    return f"{VALUATION}-{metric}"


#: Federated evaluation reply (:mod:`fedsim.privacy.evaluation`): the site's released
#: K × K confusion matrix (list[float], row-major ``m[true, predicted]``), the ε of this
#: release and the ε of all its evaluation releases so far
EVAL_COUNTS: Final = "eval-counts"
EVAL_EPSILON: Final = "eval-epsilon"
EPSILON_EVALUATION: Final = "epsilon-evaluation"

#: Samples the client has pruned (valuation.prune); it trains on num-examples others
NUM_PRUNED: Final = "num-pruned"

# ConfigRecord STATUS entries replied by a client
STATUS_CODE: Final = "code"
STATUS_REASON: Final = "reason"
#: The client's privacy ledger (JSON, :meth:`fedsim.privacy.PrivacyLedger.to_json`)
STATUS_LEDGER: Final = "ledger"
STATUS_OK: Final = "ok"
STATUS_BUDGET_EXHAUSTED: Final = "budget-exhausted"
#: The site's own privacy policy refuses the round (:mod:`fedsim.deploy.policy`)
STATUS_REFUSED: Final = "refused"

# Flower node_config keys (simulation sets partition-id / num-partitions itself)
NODE_PARTITION_ID: Final = "partition-id"
NODE_NUM_PARTITIONS: Final = "num-partitions"

# Per-node persistent state (context.state)
STATE_RECORD: Final = "fedsim-state"
STATE_LEDGER: Final = "ledger"
#: Indices (into the client's data) dropped by valuation.prune, JSON list
STATE_PRUNED: Final = "pruned"
#: ArrayRecord of VoG's running statistics (valuation.vog_checkpoints: rounds)
STATE_VOG: Final = "fedsim-vog"

# Deployment node_config keys of a real site (see fedsim.deploy.site)
NODE_CLIENT_ID: Final = "client-id"
NODE_DATA_PATH: Final = "data-path"
NODE_DATA_FORMAT: Final = "data-format"
NODE_STATE_DIR: Final = "state-dir"
#: The site's privacy policy file (YAML, :mod:`fedsim.deploy.policy`)
NODE_POLICY_PATH: Final = "policy-path"

#: Environment variable set by ``fedsim superlink --runs-dir``: the only folder where a
#: deployed ServerApp writes run directories (:mod:`fedsim.deploy.confine`)
RUNS_DIR_ENV: Final = "FEDSIM_RUNS_DIR"


#: Prefix of a train message's ``group_id`` naming its virtual client when many
#: simulated clients share a node (``fedsim run``); Flower copies it into the reply.
CLIENT_TAG: Final = "fedsim-client-"


def client_tag(client_id: int) -> str:
    """The ``group_id`` of a pooled train message to ``client_id``.

    >>> client_tag(7)
    'fedsim-client-7'
    """
    return f"{CLIENT_TAG}{int(client_id)}"


def tagged_client(group_id: str, num_clients: int) -> int | None:
    """The client a ``group_id`` names (:func:`client_tag`), or ``None`` when it names none
    in ``[0, num_clients)``.

    >>> tagged_client("fedsim-client-7", 10), tagged_client("fedsim-client-7", 5)
    (7, None)
    """
    if not group_id.startswith(CLIENT_TAG):
        return None
    digits = group_id[len(CLIENT_TAG) :]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 9:
        return None
    cid = int(digits)
    return cid if cid < num_clients else None
