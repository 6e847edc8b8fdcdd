# Backbone fragment: ShuffleNetV2 1.5x (megvii layout: BGR 0-255 input, no normalisation).
# Add this file to any mmdet detector config's _base_ list and set the detector's
# model.data_preprocessor, model.backbone and model.neck.in_channels from the three
# values below (docs/backbone_swap.md has the worked example).
custom_imports = dict(imports=['mmsfr'], allow_failed_imports=False)
mmsfr_backbone = dict(
    _delete_=True,
    type='ShuffleNetV2',
    arch='1.5x', layout='megvii',
    out_indices=(0, 1, 2, 3),  # strides 4/8/16/32
    frozen_stages=1,
    norm_eval=True,
    init_cfg=dict(type='Pretrained', prefix='backbone.',
                  checkpoint='checkpoints/shufflenetv2_x1_5_deploy_in1k.pth'))
# = the backbone's out_channels (tests check them against its metadata)
mmsfr_in_channels = [24, 176, 352, 704]
# The input convention the pretrained weights expect.
mmsfr_data_preprocessor = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], bgr_to_rgb=False)
