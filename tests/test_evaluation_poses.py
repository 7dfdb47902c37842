"""Pose estimation from frames: bundle adjuster, both backends on exact synthetic renders, errors."""

import numpy as np
import pytest

from _evaluation_scene import BoxRoom, axis_angle_to_matrix, pose, rot_y, walk_and_turn
from sanawm.errors import UserInputError
from sanawm.evaluation import (
    PoseEstimationConfig,
    PoseEstimationError,
    camera_errors,
    colmap_available,
    estimate_poses,
    estimate_poses_with_backend,
)
from sanawm.evaluation import _bundle_adjust
from sanawm.evaluation.geometry import rotation_angle_deg

HEIGHT, WIDTH = 120, 160
K = (100.0, 100.0, 80.0, 60.0)  # sanawm convention: centred principal point at (W/2, H/2)
OPENCV = PoseEstimationConfig(backend="opencv")


@pytest.fixture(scope="module")
def room():
    return BoxRoom(seed=0)


@pytest.fixture(scope="module")
def walk(room):
    c2w = walk_and_turn(24)
    return c2w, room.render_video(c2w, K, HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def walk_estimate(walk):
    return estimate_poses(walk[1], K, OPENCV)


def synthetic_scene(rng, cams: int = 5, n: int = 150):
    """Cameras turning and moving, points in front of them, every point seen by every camera:
    (true w2c, points, camera and point index per observation, points in camera coordinates)."""
    truth = np.tile(np.eye(4), (cams, 1, 1))
    for i in range(cams):
        truth[i, :3, :3] = axis_angle_to_matrix(rng.normal(size=3), 4.0 * i)
        truth[i, :3, 3] = [0.3 * i, -0.1 * i, 0.05 * i]
    points = rng.uniform([-2, -2, 4], [2, 2, 8], size=(n, 3))
    cam_idx, point_idx = (a.ravel() for a in np.meshgrid(np.arange(cams), np.arange(n), indexing="ij"))
    in_cam = np.einsum("mij,mj->mi", truth[cam_idx, :3, :3], points[point_idx]) + truth[cam_idx, :3, 3]
    return truth, points, cam_idx, point_idx, in_cam


def test_bundle_adjustment_recovers_exact_poses_and_points():
    rng = np.random.default_rng(0)
    cams = 5
    truth, points, cam_idx, point_idx, in_cam = synthetic_scene(rng, cams)
    start = truth.copy()
    for i in range(2, cams):  # two fixed cameras hold the gauge and the scale
        start[i, :3, :3] = axis_angle_to_matrix(rng.normal(size=3), 1.5) @ truth[i, :3, :3]
        start[i, :3, 3] += rng.normal(scale=0.05, size=3)
    problem = _bundle_adjust.Problem(
        w2c=start,
        free=np.array([False, False, True, True, True]),
        points=points + rng.normal(scale=0.1, size=points.shape),
        obs_cam=cam_idx,
        obs_point=point_idx,
        obs_xy=in_cam[:, :2] / in_cam[:, 2:],
    )
    residuals = _bundle_adjust.solve(problem, delta=0.01, iterations=30)
    assert residuals.max() < 1e-9
    assert rotation_angle_deg(problem.w2c[:, :3, :3], truth[:, :3, :3]).max() < 1e-6
    assert np.abs(problem.w2c - truth).max() < 1e-7
    assert np.abs(problem.points - points).max() < 1e-6


def test_bundle_adjustment_ignores_errors_its_whitening_gives_no_weight():
    """Observations off by a lot along one direction each (as Lucas-Kanade tracks slide along
    an edge) and exact across it: weighing each residual by the projector across that
    direction recovers the exact poses, the plain adjustment does not."""
    rng = np.random.default_rng(1)
    cams = 5
    truth, points, cam_idx, point_idx, in_cam = synthetic_scene(rng, cams)
    along = rng.normal(size=(len(cam_idx), 2))
    along /= np.linalg.norm(along, axis=1, keepdims=True)
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    observed = in_cam[:, :2] / in_cam[:, 2:] + rng.uniform(-0.03, 0.03, size=(len(cam_idx), 1)) * along
    start = truth.copy()
    for i in range(2, cams):
        start[i, :3, :3] = axis_angle_to_matrix(rng.normal(size=3), 1.0) @ truth[i, :3, :3]
        start[i, :3, 3] += rng.normal(scale=0.03, size=3)
    errors = []
    for whiten in (None, np.einsum("mi,mj->mij", across, across)):
        problem = _bundle_adjust.Problem(
            w2c=start.copy(), free=np.array([False, False, True, True, True]), points=points.copy(),
            obs_cam=cam_idx, obs_point=point_idx, obs_xy=observed, obs_whiten=whiten,
        )
        _bundle_adjust.solve(problem, delta=0.01, iterations=30)
        errors.append(rotation_angle_deg(problem.w2c[:, :3, :3], truth[:, :3, :3]).max())
    assert errors[1] < 1e-9  # measured 5e-15 (deg)
    assert errors[0] > 0.9  # measured 1.96 (deg)


def test_whitening_weighs_an_edge_across_it_and_a_corner_alike():
    """The structure tensor of a vertical step edge has no gradient along y: a keypoint on it
    counts its x error fully and its y error at the floor weight; a corner counts both fully."""
    from sanawm.evaluation import _pose_opencv

    edge = np.zeros((40, 40), np.uint8)
    edge[:, 20:] = 200
    corner = edge.copy()
    corner[20:, :] = 200 - corner[20:, :]
    point = np.array([[19.5, 20.0]])
    w_edge = _pose_opencv._whitening(_pose_opencv._structure_tensor(edge), point)[0]
    floor = _pose_opencv._MIN_EDGE_WEIGHT
    np.testing.assert_allclose(w_edge, [[1.0, 0.0], [0.0, floor]], atol=1e-6)
    w_corner = _pose_opencv._whitening(_pose_opencv._structure_tensor(corner), np.array([[19.5, 19.5]]))[0]
    np.testing.assert_allclose(w_corner, np.eye(2), atol=1e-6)


def test_edge_ratio_is_zero_on_a_straight_edge_and_one_on_a_symmetric_corner():
    """A vertical step edge has no gradient along y (ratio 0, under _EDGE_TRACK_RATIO: a track
    along it takes no part in the choice of the start pair); the checkerboard corner of the test
    above has as much gradient along x as along y (ratio 1)."""
    from sanawm.evaluation import _pose_opencv

    edge = np.zeros((40, 40), np.uint8)
    edge[:, 20:] = 200
    corner = edge.copy()
    corner[20:, :] = 200 - corner[20:, :]
    ratio_edge = _pose_opencv._edge_ratios(_pose_opencv._structure_tensor(edge), np.array([[19.5, 20.0]]))
    ratio_corner = _pose_opencv._edge_ratios(_pose_opencv._structure_tensor(corner), np.array([[19.5, 19.5]]))
    np.testing.assert_allclose(ratio_edge, [0.0], atol=1e-9)
    assert _pose_opencv._EDGE_TRACK_RATIO > 0.0
    np.testing.assert_allclose(ratio_corner, [1.0], atol=1e-6)


def test_consensus_counts_the_tracks_the_cameras_explain():
    """`_consensus` against the points the tracks were made from: with the true cameras every
    track of 3 or more views agrees; tracks moved 0.2 px in one view still agree, those moved
    1.5 px do not; a camera turned by 2 degrees loses the tracks it sees (each of them in view of
    it); two-view tracks are never counted."""
    from sanawm.evaluation import _pose_opencv

    rng = np.random.default_rng(3)
    cams, focal = 5, 100.0
    truth, points, cam_idx, point_idx, in_cam = synthetic_scene(rng, cams, n=60)
    observed = in_cam[:, :2] / in_cam[:, 2:]
    moved = {0: 0.2, 1: 1.5, 2: 0.2, 3: 1.5}  # track -> pixels added to its view in camera 1
    for track, px in moved.items():
        observed[(point_idx == track) & (cam_idx == 1), 0] += px / focal
    two_view = 59  # seen by cameras 0 and 1 only
    sfm = object.__new__(_pose_opencv._SequentialSfM)
    sfm.intrinsics = np.tile([focal, focal, 0.0, 0.0], (cams, 1))
    frames, track_obs = [], [[] for _ in range(len(points))]
    for c in range(cams):
        rows = np.flatnonzero((cam_idx == c) & ((point_idx != two_view) | (c < 2)))
        for k, row in enumerate(rows):
            track_obs[point_idx[row]].append((c, k))
        frames.append(_pose_opencv._FrameData(
            keypoints=observed[rows] * focal, normalized=observed[rows], track=point_idx[rows],
            whiten=np.tile(np.eye(2), (len(rows), 1, 1)), edge_ratio=np.ones(len(rows)),
        ))  # fmt: skip
    sfm.state = _pose_opencv._State(frames=frames, w2c=list(truth), track_obs=track_obs)
    counted = len(points) - 1
    assert sfm._consensus() == (counted - 2, counted)  # the two tracks moved 1.5 px fail
    turned = truth.copy()
    turned[4, :3, :3] = axis_angle_to_matrix(np.array([0.0, 1.0, 0.0]), 2.0) @ truth[4, :3, :3]
    sfm.state.w2c = list(turned)
    assert sfm._consensus() == (0, counted)  # 2 degrees are 3.5 px at this focal length


def test_rotation_angle_matches_the_rotation_vector_length():
    """`_angle_deg`, which bounds how far a start pair's essential-matrix rotation may stray from
    its best pure turn (_START_TURN_FACTOR), against the length of OpenCV's rotation vector."""
    import cv2

    from sanawm.evaluation import _pose_opencv

    rng = np.random.default_rng(3)
    for degrees in (0.0, 0.2, 3.3, 45.0, 170.0):
        axis = rng.normal(size=3)
        rvec = np.radians(degrees) * axis / np.linalg.norm(axis)
        rotation = cv2.Rodrigues(rvec)[0]
        expected = np.degrees(np.linalg.norm(cv2.Rodrigues(rotation)[0]))
        assert abs(_pose_opencv._angle_deg(rotation) - expected) < 1e-5
        assert abs(_pose_opencv._angle_deg(rotation) - degrees) < 1e-5


def test_opencv_backend_follows_a_rendered_walk(walk, walk_estimate):
    c2w, estimated = walk[0], walk_estimate
    assert estimated.shape == (24, 4, 4)
    assert np.allclose(estimated[0], np.eye(4))
    errors = camera_errors(estimated, c2w)
    # measured 0.041 / 0.069 deg (the bounds: mean 0.3, max 0.8)
    assert errors.rot_err_deg.mean() <= 0.3 and errors.rot_err_deg.max() <= 0.8
    path_length = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()
    assert errors.trans_err.mean() <= 0.05 * path_length


def test_a_wrong_trajectory_scores_far_worse(walk, walk_estimate):
    c2w, estimated = walk[0], walk_estimate
    right = camera_errors(estimated, c2w)
    mirrored = walk_and_turn(24, yaw_per_frame=-1.5)  # turning left instead of right
    wrong = camera_errors(estimated, mirrored)
    assert wrong.rot_err_deg.mean() > 10 * max(right.rot_err_deg.mean(), 0.1)
    assert wrong.cammc.mean() > 5 * right.cammc.mean()


def test_turning_on_the_spot_gives_rotation_without_translation(room):
    c2w = np.stack([pose(rot_y(3.0 * i), [0.0, 0.0, 0.0]) for i in range(16)])
    estimated = estimate_poses(room.render_video(c2w, K, HEIGHT, WIDTH), K, OPENCV)
    assert rotation_angle_deg(estimated[:, :3, :3], c2w[:, :3, :3]).max() < 0.3  # measured 0.019
    assert np.abs(estimated[:, :3, 3]).max() < 1e-9


def test_downscaled_frames_and_per_frame_intrinsics(room):
    """A 240x320 clip worked on at 160 px: exercises the intrinsics rescaling."""
    c2w = walk_and_turn(12)
    k = np.array([200.0, 200.0, 160.0, 120.0])
    video = room.render_video(c2w, k, 240, 320)
    config = PoseEstimationConfig(backend="opencv", max_image_side=160)
    estimated = estimate_poses(video, np.tile(k, (12, 1)), config)
    assert camera_errors(estimated, c2w).rot_err_deg.mean() <= 0.3  # measured 0.029


@pytest.mark.skipif(not colmap_available(), reason="pycolmap is optional")
def test_colmap_backend_follows_a_rendered_walk(walk):
    """COLMAP's global mapper on the first half of the walk (12 frames keep it to ~15 s)."""
    c2w, video = walk[0][:12], walk[1][:12]
    estimated, backend = estimate_poses_with_backend(video, K, PoseEstimationConfig(backend="colmap"))
    assert backend == "colmap"
    errors = camera_errors(estimated, c2w)
    # measured 0.016 / 0.029 deg (the bounds: mean 0.3, max 0.8)
    assert errors.rot_err_deg.mean() <= 0.3 and errors.rot_err_deg.max() <= 0.8


@pytest.mark.skipif(not colmap_available(), reason="pycolmap is optional")
def test_colmap_maps_the_opencv_tracks_when_sift_verifies_few_matches(walk, monkeypatch):
    """Below `_FEW_MATCHES` (forced here on a textured room, where SIFT finds plenty) the OpenCV
    backend's tracks replace SIFT's matches in COLMAP's database after SIFT's map is made; SIFT's
    map is kept when its points live long (`_SIFT_MIN_TRACK_LENGTH`), the tracks' map otherwise.
    Frames that cannot be tracked keep SIFT's matches."""
    import sanawm.evaluation._pose_colmap as colmap_module

    imported, mapped = [], []
    import_tracks, global_mapping = colmap_module._import_tracks, colmap_module._global_mapping
    monkeypatch.setattr(colmap_module, "_FEW_MATCHES", 10**9)
    monkeypatch.setattr(colmap_module, "_import_tracks", lambda *args: imported.append(import_tracks(*args)))
    monkeypatch.setattr(
        colmap_module, "_global_mapping", lambda *args: mapped.append(args[3].name) or global_mapping(*args)
    )
    c2w, video = walk[0][:12], walk[1][:12]
    config = PoseEstimationConfig(backend="colmap")
    errors = camera_errors(estimate_poses(video, K, config), c2w)
    assert (len(imported), mapped) == (1, ["sift"])  # the room's SIFT points live long: SIFT's map kept
    # measured 0.016 / 0.029 deg (the bounds: mean 0.3, max 0.8)
    assert errors.rot_err_deg.mean() <= 0.3 and errors.rot_err_deg.max() <= 0.8

    imported.clear(), mapped.clear()
    monkeypatch.setattr(colmap_module, "_points_live_long", lambda reconstruction, frames: False)
    errors = camera_errors(estimate_poses(video, K, config), c2w)
    assert (len(imported), mapped) == (1, ["sift", "tracks"])
    # measured 0.030 / 0.071 deg
    assert errors.rot_err_deg.mean() <= 0.3 and errors.rot_err_deg.max() <= 0.8
    flat = np.full((4, HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    assert colmap_module._opencv_tracks(flat, np.array(K), OPENCV) is None


@pytest.mark.skipif(not colmap_available(), reason="pycolmap is optional")
def test_colmap_poses_are_the_same_in_every_run(walk):
    """Seeded RANSAC and mapper, one thread per stage: a second run, with other thread settings
    outside, gives the same poses bit for bit (8 frames to keep it short)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    config = PoseEstimationConfig(backend="colmap")
    first = estimate_poses(walk[1][:8], K, config)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        second = estimate_poses(walk[1][:8], K, config)
    assert np.array_equal(first, second)


def test_textureless_video_is_a_clear_error():
    flat = np.full((4, HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    with pytest.raises(PoseEstimationError, match="frame 0: only 0 trackable corners"):
        estimate_poses(flat, K, OPENCV)
    assert issubclass(PoseEstimationError, UserInputError)


def test_a_cut_between_unrelated_shots_is_a_clear_error(room, walk):
    _, video = walk
    other = BoxRoom(seed=7).render_video(walk_and_turn(4), K, HEIGHT, WIDTH)
    with pytest.raises(PoseEstimationError, match="from frame 5 to frame 6"):
        estimate_poses(np.concatenate([video[:6], other]), K, OPENCV)


def test_inputs_are_validated(walk):
    _, video = walk
    with pytest.raises(UserInputError, match="unknown pose backend"):
        PoseEstimationConfig(backend="magic")
    with pytest.raises(UserInputError, match="uint8"):
        estimate_poses(video.astype(np.float32), K, OPENCV)
    with pytest.raises(UserInputError, match="intrinsics"):
        estimate_poses(video, (100.0, 100.0, 80.0), OPENCV)
    with pytest.raises(UserInputError, match="at least 2 frames"):
        estimate_poses(video[:1], K, OPENCV)


def test_a_camera_at_rest_before_walking(room):
    """Identical first frames leave the essential matrix undefined; tracking must go on."""
    walk = walk_and_turn(12)
    c2w = np.concatenate([np.repeat(walk[:1], 5, axis=0), walk])
    estimated = estimate_poses(room.render_video(c2w, K, HEIGHT, WIDTH), K, OPENCV)
    errors = camera_errors(estimated, c2w)
    assert errors.rot_err_deg.mean() <= 0.3  # measured 0.028
    assert np.abs(estimated[1:5] - estimated[0]).max() < 0.02  # the resting frames stay put


def test_auto_uses_opencv_first(room, monkeypatch):
    """OpenCV is the more accurate backend on the ground-truth clips: 'auto' never calls COLMAP
    while OpenCV succeeds, installed or not."""
    import sanawm.evaluation._pose_colmap as colmap_module
    import sanawm.evaluation.pose_estimation as module

    def unexpected(*args, **kwargs):
        raise AssertionError("COLMAP called although OpenCV succeeded")

    monkeypatch.setattr(module, "colmap_available", lambda: True)
    monkeypatch.setattr(colmap_module, "colmap_poses", unexpected)
    c2w = np.stack([pose(rot_y(3.0 * i), [0.0, 0.0, 0.0]) for i in range(10)])
    _, backend = estimate_poses_with_backend(room.render_video(c2w, K, HEIGHT, WIDTH), K)
    assert backend == "opencv"


def test_auto_without_pycolmap_and_explicit_colmap_request(walk, monkeypatch):
    import sanawm.evaluation.pose_estimation as module

    monkeypatch.setattr(module, "colmap_available", lambda: False)
    _, backend = estimate_poses_with_backend(walk[1][:6], K)
    assert backend == "opencv"
    with pytest.raises(UserInputError, match="needs pycolmap"):
        estimate_poses(walk[1][:6], K, PoseEstimationConfig(backend="colmap"))


def test_auto_falls_back_to_colmap_and_failure_messages(walk, monkeypatch, caplog):
    """'auto' tries COLMAP when OpenCV fails and names both failures if COLMAP fails too; an
    explicit 'colmap' request fails with the suggestion to use OpenCV."""
    import sanawm.evaluation._pose_colmap as colmap_module
    import sanawm.evaluation._pose_opencv as opencv_module
    import sanawm.evaluation.pose_estimation as module

    colmap_poses = np.tile(np.eye(4), (6, 1, 1))

    def opencv_fails(*args, **kwargs):
        raise PoseEstimationError("frame 3: only 4 trackable corners")

    def colmap_fails(*args, **kwargs):
        raise PoseEstimationError("COLMAP registered 3 of 6 frames; missing frames 3, 4, 5")

    monkeypatch.setattr(module, "colmap_available", lambda: True)
    monkeypatch.setattr(opencv_module, "opencv_poses", opencv_fails)
    monkeypatch.setattr(colmap_module, "colmap_poses", lambda *args: colmap_poses)
    with caplog.at_level("WARNING", logger=module.__name__):
        estimated, backend = estimate_poses_with_backend(walk[1][:6], K)
    assert backend == "colmap" and estimated is colmap_poses
    (warning,) = caplog.messages
    assert "only 4 trackable corners" in warning and "trying COLMAP" in warning
    monkeypatch.setattr(colmap_module, "colmap_poses", colmap_fails)
    with pytest.raises(PoseEstimationError, match=r"corners \(COLMAP failed too: COLMAP registered 3 of 6"):
        estimate_poses(walk[1][:6], K)
    with pytest.raises(PoseEstimationError, match=r"missing frames 3, 4, 5 \(the 'opencv' backend"):
        estimate_poses(walk[1][:6], K, PoseEstimationConfig(backend="colmap"))
    with pytest.raises(PoseEstimationError, match=r"only 4 trackable corners$"):
        estimate_poses(walk[1][:6], K, OPENCV)


def test_bundle_adjustment_schur_complement_ways_agree(monkeypatch):
    """The reduced camera system built over observation pairs and with the dense
    camera-by-point matrix (chunked) is the same system: equal steps, equal results."""
    rng = np.random.default_rng(1)
    cams, n = 6, 120
    w2c = np.tile(np.eye(4), (cams, 1, 1))
    for i in range(cams):
        w2c[i, :3, :3] = axis_angle_to_matrix(rng.normal(size=3), 3.0 * i)
        w2c[i, :3, 3] = [0.2 * i, 0.05 * i, -0.1 * i]
    points = rng.uniform([-2, -2, 4], [2, 2, 8], size=(n, 3))
    seen = rng.random((cams, n)) < 0.7  # tracks of different lengths
    cam_idx, point_idx = np.nonzero(seen)
    in_cam = np.einsum("mij,mj->mi", w2c[cam_idx, :3, :3], points[point_idx]) + w2c[cam_idx, :3, 3]
    obs = in_cam[:, :2] / in_cam[:, 2:] + rng.normal(scale=2e-3, size=(len(cam_idx), 2))
    results = []
    for overhead, chunk in ((0, 64 << 20), (10**9, 4000)):  # pairs; dense in chunks of a few points
        monkeypatch.setattr(_bundle_adjust, "_PAIR_OVERHEAD", overhead)
        monkeypatch.setattr(_bundle_adjust, "_CHUNK_BYTES", chunk)
        start = w2c.copy()
        start[2:, :3, 3] += 0.05
        problem = _bundle_adjust.Problem(
            w2c=start, free=np.arange(cams) >= 2, points=points + 0.05,
            obs_cam=cam_idx, obs_point=point_idx, obs_xy=obs,
        )
        term = _bundle_adjust._SchurTerm(point_idx[cam_idx >= 2], cam_idx[cam_idx >= 2] - 2, 4, n)
        assert (term.pairs is None) == bool(overhead)
        results.append((_bundle_adjust.solve(problem, delta=0.01, iterations=4), problem.w2c, problem.points))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_same_poses_whatever_the_thread_counts(walk):
    """OpenCV and numpy's BLAS run on one thread inside the estimator: the caller's thread
    settings do not reach the result, bit for bit."""
    cv2 = pytest.importorskip("cv2")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    results = []
    before = cv2.getNumThreads()
    try:
        for threads in (1, 2):
            cv2.setNumThreads(threads)
            with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
                results.append(estimate_poses(walk[1][:12], K, OPENCV))
    finally:
        cv2.setNumThreads(before)
    assert np.array_equal(results[0], results[1])
    assert cv2.getNumThreads() == before


def test_a_frame_with_few_strong_corners_takes_fainter_ones():
    """One bright block (4 strong corners) on faint texture: the faint corners are used when
    the strong ones are too few, and only then (so the frame is tracked, not refused)."""
    cv2 = pytest.importorskip("cv2")
    from sanawm.evaluation import _pose_opencv

    rng = np.random.default_rng(0)
    image = np.full((HEIGHT, WIDTH), 100.0)
    image[30:60, 40:80] = 250.0
    image += cv2.GaussianBlur(rng.normal(0.0, 15.0, (HEIGHT, WIDTH)), (0, 0), 1.5)
    gray = np.clip(image, 0, 255).astype(np.uint8)
    none = np.zeros((0, 2))
    assert len(_pose_opencv._corners(gray, 4000, 3.0, none)) == 4  # measured: the block's corners
    assert len(_pose_opencv._corners(gray, 4000, 3.0, none, needed=20)) >= 40  # measured 285
    frames = np.stack([gray, np.roll(gray, 2, axis=1)])[..., None].repeat(3, axis=-1)
    assert estimate_poses(frames, K, OPENCV).shape == (2, 4, 4)  # refused before, as "only 4 corners"
