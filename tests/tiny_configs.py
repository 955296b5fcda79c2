"""Tiny configs shared by the tests: small networks, few steps, so compiles stay cheap."""

from udg.agents.sac import SACConfig
from udg.diversity.wasserstein import DiversityConfig
from udg.experiments.generate_config import GenerateConfig
from udg.offline import mopo
from udg.offline.ensemble import DynamicsConfig

TINY = GenerateConfig(
    env="point",
    num_agents=3,
    steps=500,
    episode_length=50,
    warmup_steps=100,
    updates_per_step=0.5,
    updates_per_call=5,
    checkpoint_every=3,
    sac=SACConfig(
        hidden_dims=(16, 16), batch_size=32, autotune_temperature=False, init_temperature=0.2
    ),
    diversity=DiversityConfig(reward_scale=1.0),
)

TINY_DYNAMICS = DynamicsConfig(
    ensemble_size=3,
    num_elites=2,
    hidden_dims=(16, 16),
    weight_decay=(2.5e-5, 5e-5, 1e-4),
    max_epochs=3,
)
TINY_MOPO = mopo.MOPOConfig(
    rollout_length=3,
    rollout_batch_size=64,
    rollout_freq=20,
    epochs=4,
    steps_per_epoch=20,
    eval_every=2,
    eval_episodes=2,
    checkpoint_every=2,
    sac=SACConfig(hidden_dims=(16, 16), batch_size=32),
    dynamics=TINY_DYNAMICS,
)


def tensorboard_scalars(folder) -> dict:
    """{(tag, step): [values]} from a folder's event files, read as TensorBoard reads them: in
    name order, a purge (a resumed run's start) dropping the events at or past its step."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            if event.session_log.status == event_pb2.SessionLog.START:
                scalars = {k: v for k, v in scalars.items() if k[1] < event.step}
            for value in event.summary.value:
                scalars.setdefault((value.tag, event.step), []).append(value.simple_value)
    return scalars
