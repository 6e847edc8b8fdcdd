# condensenet c: ImageNet pretraining with learned condensation (train-time form).
# 8 GPUs x 128 images = the recipe's batch 1024; other batch sizes: --auto-scale-lr.
# Ends fully condensed; then: tools/convert_to_deploy.py <this config> <ckpt> <out>
# and evaluate <out> with condensenet-c_deploy_in1k.py.
_base_ = [
    '../_base_/models/condensenet-c.py',
    '../_base_/datasets/imagenet_bs128_sfr_bilinear.py',
    '../_base_/schedules/imagenet_bs1024_cosine_350e.py',
    '../_base_/condensation_runtime.py',
]

