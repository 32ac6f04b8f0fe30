from studio.world.modelkit import WorldModelSize
from studio.world.train import TrainConfig, train


def test_quick_training_lowers_the_loss_and_saves_safetensors(tmp_path):
    config = TrainConfig(vision_steps=15, joint_steps=60, batch_size=8, lr=3e-3, warmup=5,
                         size=WorldModelSize(48, 1, 2, 96, 48, 1, 2, 96))
    _, _, log = train(config, out_dir=tmp_path, progress=False)
    first, last = log.joint[0], sum(log.joint[-2:]) / 2
    assert last < 0.6 * first, (first, last)
    assert log.vision[-1] < log.vision[0]
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    assert (tmp_path / "training.json").is_file()
