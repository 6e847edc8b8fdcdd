# Backbone fragment: mmdet's own MobileNetV2 (the paper's comparison), ImageNet RGB mean/std.
# Add this file to any mmdet detector config's _base_ list and set the detector's
# model.data_preprocessor, model.backbone and model.neck.in_channels from the three
# values below (docs/backbone_swap.md has the worked example).
custom_imports = dict(imports=['mmsfr'], allow_failed_imports=False)
mmsfr_backbone = dict(
    _delete_=True,
    type='MobileNetV2',
    widen_factor=1.0,
    out_indices=(1, 2, 4, 7),  # strides 4/8/16/32
    frozen_stages=1,
    norm_eval=True,
    init_cfg=dict(type='Pretrained', prefix='backbone.',
                  checkpoint='checkpoints/mobilenetv2_deploy_in1k.pth'))
# = the backbone's out_channels (tests check them against its metadata)
mmsfr_in_channels = [24, 32, 96, 1280]
# The input convention the pretrained weights expect.
mmsfr_data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
