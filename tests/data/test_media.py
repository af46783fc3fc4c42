"""fmdepth.data.media: one image/video vocabulary and reader for every command."""
import os

import numpy as np
import pytest

from fmdepth.data import media


def _write_png(path, shape=(6, 8, 3)):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(path)


def test_list_images_sorted_case_insensitive_files_only(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.tif", "notes.txt", "clip.mp4"):
        (tmp_path / name).write_bytes(b"x")
    os.mkdir(tmp_path / "d.png")  # a folder with an image-like name is not an image
    assert media.list_images(str(tmp_path)) == ["a.jpg", "b.PNG", "c.tif"]


def test_list_images_rejects_a_file(tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="x.png"):
        media.list_images(str(f))


def test_every_reader_shares_the_same_extensions():
    from fmdepth import inference
    from fmdepth.data import folder, pairs

    for mod in (inference, folder, pairs):
        assert mod.IMAGE_EXTS == media.IMAGE_EXTS, mod.__name__
        assert mod.VIDEO_EXTS == media.VIDEO_EXTS, mod.__name__


@pytest.mark.parametrize("frame,expected", [
    (np.full((4, 5), 7, np.uint8), (4, 5, 3)),
    (np.full((4, 5, 1), 7, np.uint8), (4, 5, 3)),
    (np.full((4, 5, 4), 7, np.uint8), (4, 5, 3)),
    (np.full((4, 5, 3), 0.5, np.float32), (4, 5, 3)),
    (np.full((4, 5, 3), 65535, np.uint16), (4, 5, 3)),
])
def test_as_rgb_uint8(frame, expected):
    out = media.as_rgb_uint8(frame)
    assert out.shape == expected and out.dtype == np.uint8 and out.flags.c_contiguous
    if frame.dtype == np.float32:
        assert out.max() == 128
    if frame.dtype == np.uint16:
        assert out.max() == 255


def test_as_rgb_uint8_rejects_odd_shapes():
    with pytest.raises(ValueError, match="frame"):
        media.as_rgb_uint8(np.zeros((4, 5, 2), np.uint8))


def test_gif_frames_and_info(tmp_path):
    import imageio.v2 as iio2

    frames = [np.full((10, 12, 3), 40 * i, np.uint8) for i in range(3)]
    path = str(tmp_path / "clip.gif")
    iio2.mimsave(path, frames)
    out = list(media.iter_video_frames(path))
    assert len(out) == 3 and out[0].shape == (10, 12, 3) and out[0].dtype == np.uint8
    assert [int(f.mean()) for f in out] == pytest.approx([0, 40, 80], abs=2)
    n, _fps = media.video_info(path)
    assert n == 3


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="broken.mp4"):
        list(media.iter_video_frames(str(bad)))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        media.video_info(str(tmp_path / "missing.mp4"))


def test_video_info_of_a_frame_folder(tmp_path):
    for i in range(4):
        _write_png(tmp_path / f"{i:03d}.png")
    assert media.video_info(str(tmp_path)) == (4, 0.0)


def test_read_image_one_rule_for_bit_depths_and_channels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = media.read_image(str(tmp_path / "g16.png"))
    assert out.shape == (1, 6, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], g16 / 65535.0, atol=1e-6)
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(media.read_image(str(tmp_path / "rgba.png")),
                               np.transpose(rgba[..., :3], (2, 0, 1)) / 255.0, atol=1e-6)
    Image.fromarray(rgba[..., :2]).save(tmp_path / "la.png")  # grey + alpha
    np.testing.assert_allclose(media.read_image(str(tmp_path / "la.png")), rgba[None, ..., 0] / 255.0, atol=1e-6)
    pal = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.save(tmp_path / "pal.png")
    np.testing.assert_allclose(media.read_image(str(tmp_path / "pal.png")),
                               np.transpose(np.asarray(pal.convert("RGB")), (2, 0, 1)) / 255.0, atol=1e-6)
    grey = media.read_image(str(tmp_path / "rgba.png"), channels=1)
    assert grey.shape == (1, 6, 7)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        media.read_image(str(tmp_path / "missing.png"))


def test_every_image_reader_follows_the_same_16_bit_rule(tmp_path):
    import warnings

    from PIL import Image

    from fmdepth import inference
    from fmdepth.correspondence import load_image as nbb_load_image
    from fmdepth.data import pairs

    g16 = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1365)
    path = str(tmp_path / "g16.png")
    Image.fromarray(g16).save(path)
    ref = media.read_image(path)  # (1, 6, 8)
    np.testing.assert_array_equal(pairs.load_image(path), ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grey replicated to RGB
        np.testing.assert_allclose(nbb_load_image(path)[0].numpy(), np.repeat(ref, 3, 0))
    rgb8 = inference.load_image(path)
    assert rgb8.shape == (6, 8, 3) and rgb8.dtype == np.uint8
    np.testing.assert_array_equal(rgb8[..., 0], np.round(g16 / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(media.as_rgb_uint8(g16)[..., 0], rgb8[..., 0])


def test_inference_reader_keeps_8_bit_values(tmp_path):
    from fmdepth import inference

    _write_png(tmp_path / "a.png")
    from PIL import Image

    with Image.open(tmp_path / "a.png") as im:
        expect = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(inference.load_image(str(tmp_path / "a.png")), expect)


def test_kitti_open_image_follows_the_one_reader(tmp_path):
    """KITTI/odometry frames go through read_image: 16-bit scales by 1/65535 (PIL alone saturates)."""
    import imageio.v3 as iio

    from fmdepth.data.kitti_io import open_image
    from fmdepth.data.media import as_rgb_uint8, read_image

    grey16 = np.full((4, 6), 32768, np.uint16)
    p16 = str(tmp_path / "g16.png")
    iio.imwrite(p16, grey16)
    img = np.asarray(open_image(p16, expected_size=(4, 6)))
    assert img.shape == (4, 6, 3) and img.dtype == np.uint8
    assert (img == 128).all()
    rgb8 = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    p8 = str(tmp_path / "c8.png")
    iio.imwrite(p8, rgb8)
    assert np.array_equal(np.asarray(open_image(p8)), rgb8)  # 8-bit files come back exactly
    assert np.array_equal(np.asarray(open_image(p8)), as_rgb_uint8(read_image(p8, 3).transpose(1, 2, 0)))
