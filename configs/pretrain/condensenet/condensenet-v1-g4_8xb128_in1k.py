# condensenet v1-g4: ImageNet pretraining with learned condensation (train-time form).
# 8 GPUs x 128 images = the recipe's batch 1024; other batch sizes: --auto-scale-lr.
# Ends fully condensed; then: tools/convert_to_deploy.py <this config> <ckpt> <out>
# and evaluate <out> with condensenet-v1-g4_deploy_in1k.py.
_base_ = [
    '../_base_/models/condensenet-v1-g4.py',
    '../_base_/datasets/imagenet_bs128_sfr.py',
    '../_base_/schedules/imagenet_bs1024_cosine_350e.py',
    '../_base_/condensation_runtime.py',
]

# Released CondenseNet v1 weights: torchvision-style bilinear resize 256 + crop 224.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
