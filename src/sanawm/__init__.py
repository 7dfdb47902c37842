"""sanawm: the SANA-WM world model in PyTorch.

The main entry points: `WorldModel` (load a model folder or the embedded default, generate a
video that follows a camera), `Trajectory` and the camera tools in `sanawm.camera`, the
stage-1 DiT in `sanawm.model` (`load_official`, `build_preset`).
"""

from sanawm.camera import Trajectory, action_to_c2w, load_trajectory, save_camera_npz
from sanawm.errors import UserInputError
from sanawm.model import SanaWMTransformer, build_preset, load_official
from sanawm.pipeline import GenerationResult, WorldModel
from sanawm.streaming import StreamChunk, StreamSession

__all__ = [
    "GenerationResult",
    "SanaWMTransformer",
    "StreamChunk",
    "StreamSession",
    "Trajectory",
    "UserInputError",
    "WorldModel",
    "action_to_c2w",
    "build_preset",
    "load_official",
    "load_trajectory",
    "save_camera_npz",
]
__version__ = "0.1.0"
