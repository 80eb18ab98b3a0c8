"""The embedded default: pix2pix labels -> photo on locally generated facades.

    python -m pix2pix_jax.main --workdir=/tmp/pix2pix_default

trains the paper's model (U-Net generator, 70x70 PatchGAN, cGAN + 100 * L1,
Adam 2e-4 / beta1 0.5) at 64x64 on `synthetic_facades`, a procedurally
generated stand-in for CMP Facades that needs no download. Sized so that 2
CPU cores finish in minutes; the val L1 falls to well under half its step-0
value. Every other configuration imports this one and overrides what differs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The default configuration, one comment per field."""
    config = ml_collections.ConfigDict()

    config.seed = 0  # Every random draw (init, data order, jitter, dropout) derives from it.
    # K > 1 trains K independent replicas in one program, replica k being the run of seed + k.
    config.num_seeds = 1
    # Where the replicas run: auto | map (one after another on each device; CPU's default)
    # | vmap (batched together; one GPU/TPU) | devices (spread over the local devices).
    config.seeds_layout = "auto"
    config.deterministic = False  # GPU: XLA's deterministic ops, for bitwise-equal reruns.
    config.num_train_steps = 1200  # Optimisation steps (one D and one G update each).
    config.batch_size = 4  # Global batch, split evenly across all devices of all hosts.
    config.image_size = 64  # Side of the square crops the model sees.

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "synthetic_facades/res64"  # tfds name (and builder config).
    config.dataset.data_dir = ""  # tfds data directory; "" uses tfds' default.
    # AtoB | BtoA (input -> target); "": the dataset's own (facades-like BtoA, folder AtoB).
    config.dataset.direction = ""
    config.dataset.input_channels = 3  # Model input: 1 (grayscale), 3 (RGB) or 4 (RGBA).
    config.dataset.output_channels = 3  # Model output: 1, 3 or 4; images are converted.
    # Label maps (pix2pixHD): > 0 when the input is a single-channel map of class ids
    # 0 .. label_nc - 1, one-hot encoded on the device (Cityscapes labelIds: 35); 0: an image.
    config.dataset.label_nc = 0
    # With label_nc: add pix2pixHD's instance-boundary channel from instance-id maps
    # (folder: DIR/inst/<split>/, Cityscapes: *_gtFine_instanceIds.png).
    config.dataset.instance_maps = False
    config.dataset.path = ""  # folder: the image folder; pix2pix/NAME: an archive you have.
    config.dataset.skip_bad_files = False  # Skip (and list) bad image files instead of stopping.
    # Largest image (width x height) decoded, and the most pixels all decoding threads of a
    # process decode at once: 2**25 (8192x4096) bounds decoding memory to ~400 MB per process.
    config.dataset.max_image_pixels = 2**25
    config.dataset.train_split = "train"  # Split to train on.
    # resize_and_crop | crop | scale_width | scale_width_and_crop | none (the reference's).
    config.dataset.preprocess = "resize_and_crop"
    config.dataset.image_width = 0  # Width of the model's images; 0: image_size (square).
    config.dataset.load_size_ratio = 286 / 256  # Jitter: resize to this x image_size, crop back.
    config.dataset.flip = True  # Jitter: random horizontal flips (same for input and target).
    config.dataset.num_workers = 0  # grain worker processes; 0 decodes in the main process.
    config.dataset.num_threads = 8  # Decoding threads in each of those processes.
    config.dataset.prefetch = 2  # Batches kept ready per process (at least num_threads).

    config.model = ml_collections.ConfigDict()
    # unet_256 | unet_128 | unet_512 (also 1024x512) | unet_1024 | unet (depth from image_size)
    # | encoder_decoder (unet, no skips) | resnet_6blocks | resnet_9blocks (sides divisible by 4).
    config.model.generator = "unet"
    config.model.discriminator = "basic"  # basic (70x70 PatchGAN) | n_layers | pixel (1x1).
    config.model.n_layers_d = 3  # Discriminator depth when discriminator == 'n_layers'.
    config.model.ngf = 32  # Generator filters in the first (and last) layer (paper: 64).
    config.model.ndf = 32  # Discriminator filters in the first layer (paper: 64).
    config.model.norm = "batch"  # batch (per device) | sync_batch | instance | none.
    config.model.dropout_rate = 0.5  # U-Net: first three decoder blocks; ResNet: every block.
    # U-Net dropout blocks: paper (2x2, 4x4, 8x8 for unet_256) | pytorch (4x4 .. 16x16).
    config.model.dropout_layout = "paper"
    config.model.init_type = "normal"  # normal | xavier | kaiming | orthogonal (conv weights).
    config.model.init_gain = 0.02  # Std of normal, gain of xavier/orthogonal and of BN scales.
    config.model.compute_dtype = "float32"  # Activation dtype; parameters stay float32.
    # Beyond the paper (pix2pixHD / SPADE switches; the defaults are the paper's network):
    config.model.num_d = 1  # Discriminators on a 1, 1/2, 1/4.. input pyramid (pix2pixHD: 2-3).
    config.model.spectral_norm = "none"  # Spectrally normalised convs: none | d | g | both.
    config.model.upsample = "transpose"  # Decoder up-sampling: transpose | resize_conv.
    config.model.upsample_method = "nearest"  # resize_conv's resize: nearest | bilinear.
    config.model.remat = False  # Recompute the generator's blocks in backward: less memory.

    config.loss = ml_collections.ConfigDict()
    config.loss.gan_mode = "vanilla"  # vanilla (non-saturating) | lsgan | hinge | wgangp.
    config.loss.lambda_l1 = 100.0  # Weight of the L1 term in G's loss; 0 = GAN/cGAN only.
    config.loss.use_gan = True  # False = "L1 only": no D update, no adversarial term.
    config.loss.conditional_d = True  # False = D sees the image alone (GAN, not cGAN).
    config.loss.lambda_gp = 10.0  # wgangp: weight of the gradient penalty (0 disables it).
    config.loss.lambda_vgg = 0.0  # pix2pixHD's VGG19 feature loss in G's loss (pix2pixHD: 10).
    config.loss.vgg_weights = ""  # torchvision's vgg19 state_dict (vgg19-dcbbb69b.pth).
    config.loss.lambda_lpips = 0.0  # LPIPS (lpips package, v0.1) in G's loss; 0 = off.
    config.loss.lpips_weights = ""  # lpips' linear heads: weights/v0.1/alex.pth or vgg.pth.
    config.loss.lpips_backbone = ""  # torchvision's alexnet or vgg16 state_dict for those heads.
    config.loss.lambda_feat = 0.0  # D feature matching (pix2pixHD: 10); 0 disables it.

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 2e-4  # Adam step size of G (and of D, by default).
    config.optimizer.b1 = 0.5  # Adam beta1 (G's, and D's by default).
    config.optimizer.b2 = 0.999  # Adam beta2.
    # Two time-scale update rule (TTUR; Heusel et al. 2017, as SPADE uses it): D's own Adam
    # rate and betas. 0.0 / -1.0 take G's (learning_rate, b1, b2); the schedule scales both.
    config.optimizer.d_learning_rate = 0.0
    config.optimizer.d_b1 = -1.0
    config.optimizer.d_b2 = -1.0
    config.optimizer.schedule = "constant"  # constant | linear | step | cosine (lr_policy).
    config.optimizer.schedule_unit = "epochs"  # epochs (staircase per epoch) | steps.
    config.optimizer.n_epochs = 100  # linear: units at the full rate; cosine: T_max.
    config.optimizer.n_epochs_decay = 100  # linear: units of decay towards 0 after n_epochs.
    config.optimizer.lr_decay_iters = 50  # step: rate x 0.1 every this many units.

    config.eval = ml_collections.ConfigDict()
    config.eval.split = "val"  # Split evaluated during training.
    config.eval.mode = "paper"  # paper: dropout on, test-batch statistics | deterministic.
    config.eval.batch_size = 16  # Global eval batch.
    config.eval.num_samples = 8  # Rows of input | output | target in each samples/ grid.
    # Keep the checkpoint of the best eval by this metric in checkpoints_best/: l1 | fid | kid
    # (lower is better) | psnr | ssim (higher); "" keeps none.
    config.eval.best_metric = "l1"
    # pytorch-fid's pt_inception-2015-12-05-6726825d.pth: adds FID and KID to every eval
    # (and makes fid/kid usable as best_metric); "" computes neither.
    config.eval.inception_weights = ""

    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = False  # Call jax.distributed.initialize() (multi-host).
    config.distributed.coordinator_address = ""  # host:port of process 0; "" auto-detects.
    config.distributed.num_processes = 0  # 0 auto-detects (TPU VMs, SLURM, Open MPI, ...).
    config.distributed.process_id = -1  # This process's index; -1 auto-detects.

    config.log_every_steps = 50  # Train metrics to stdout, metrics.jsonl and TensorBoard.
    config.eval_every_steps = 300  # Val metrics and a sample grid (also at step 0 and the end).
    config.checkpoint_every_steps = 300  # Orbax checkpoint (also at the end).
    config.max_checkpoints_to_keep = 2  # Older checkpoints are deleted.
    # A latest checkpoint that fails its checksum: fallback (move it to checkpoints_damaged/,
    # resume from the newest intact one) | stop (refuse to resume).
    config.damaged_checkpoint = "fallback"
    return config
