"""Displays: PYNQ HDMI out, an OpenCV window, and headless (PNG/MP4 files + MJPEG over HTTP).

Every display takes finished BGR uint8 frames through `show(frame)` and is closed with
`close()`. Hardware is passed in (PYNQ style): `HdmiDisplay(hdmi_out, video)` receives
the overlay's `video.hdmi_out` and the `pynq.lib.video` module, so tests pass the fakes of
tests/fake_pynq and assert the register traffic the board would see.
"""

import functools
import http.server
import logging
import pathlib
import socketserver
import threading
import time
import warnings
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from .board import require_pynq
from .errors import HardwareError
from .opencv import cv2

log = logging.getLogger(__name__)

__all__ = ["HDMI_RESOLUTIONS", "Display", "HdmiDisplay", "HeadlessDisplay", "MjpegServer", "TeeDisplay",
           "WindowDisplay", "opencv_has_gui"]

PathLike = Union[str, pathlib.Path]


class Display:
    def show(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


# The resolutions of the Zynq boards' HDMI-out front end (pynq.lib.video.dvi).
HDMI_RESOLUTIONS = ((640, 480), (800, 600), (1280, 720), (1280, 1024), (1920, 1080))


class HdmiDisplay(Display):
    """The board's HDMI output through pynq.lib.video (default 800x600, 24-bit BGR).

    pynq's rules: `configure` (which stops a running pipeline and starts the HDMI front end)
    comes before `start` (the VDMA); `close` stops the VDMA and then the front end. Each
    shown frame is a `newframe()` buffer handed back by `writeframe`, which flushes it.
    """

    def __init__(self, hdmi_out: Any, video: Any, resolution: Tuple[int, int] = (800, 600)):
        resolution = (int(resolution[0]), int(resolution[1]))
        if resolution not in HDMI_RESOLUTIONS:
            raise ValueError("HDMI out cannot show %dx%d; its resolutions are %s" % (
                resolution + (", ".join("%dx%d" % r for r in HDMI_RESOLUTIONS),)))
        self.hdmi_out = hdmi_out
        self.resolution = resolution
        self._started = False
        mode = video.VideoMode(resolution[0], resolution[1], 24)
        try:
            hdmi_out.configure(mode, video.PIXEL_BGR)
            hdmi_out.start()
        except Exception as exc:
            self._close_after_failure(exc)
            raise HardwareError("HDMI output could not start %dx%d: %s"
                                % (resolution + (exc,))) from exc
        self._started = True

    def _close_after_failure(self, exc: Exception) -> None:
        try:
            self.hdmi_out.close()  # configure may have started the front end
        except Exception as close_exc:  # noqa: BLE001 (the first failure is the one to report)
            warnings.warn("closing the HDMI output after %s failed too: %s" % (exc, close_exc),
                          RuntimeWarning, stacklevel=3)

    @classmethod
    def from_overlay(cls, overlay: Any, resolution: Tuple[int, int] = (800, 600)) -> "HdmiDisplay":
        require_pynq()
        import pynq.lib.video as video  # board path only

        if "video" not in getattr(overlay, "hierarchy_dict", {}):
            raise HardwareError("the overlay has no video hierarchy (HDMI out); load pynq's base "
                                "overlay or one built from it")
        return cls(overlay.video.hdmi_out, video, resolution)

    def show(self, frame: np.ndarray) -> None:
        if not self._started:
            raise RuntimeError("HDMI output is closed")
        width, height = self.resolution
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_NEAREST)
        out = self.hdmi_out.newframe()
        out[:] = frame
        self.hdmi_out.writeframe(out)

    def close(self) -> None:
        if self._started:
            self._started = False
            self.hdmi_out.close()


def opencv_has_gui() -> bool:
    """Whether this OpenCV can open windows (opencv-python-headless reports 'GUI: NONE')."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() != "NONE"
    return False


class WindowDisplay(Display):
    """An OpenCV window (needs an OpenCV build with a GUI, not opencv-python-headless)."""

    def __init__(self, title: str = "pynq few-shot demo"):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error as exc:
            raise HardwareError("cannot open a window (%s): this OpenCV has no GUI support or "
                                "there is no display; use --headless or --hdmi"
                                % str(exc).strip().splitlines()[-1]) from None

    def show(self, frame: np.ndarray) -> None:
        cv2.imshow(self.title, frame)

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class MjpegServer:
    """Serves the latest frame as an MJPEG stream (multipart/x-mixed-replace) on `port`.

    Frames are JPEG-encoded only while a browser is watching, and each viewer gets at
    most `max_fps` of them (a viewer on a LAN must not take the board's bandwidth).
    Port 0 picks a free port. `host` is loopback by default: pass the board's address
    or "0.0.0.0" to let other machines watch (anyone who reaches the port can).
    """

    boundary = "frame"
    max_connections = 8  # beyond this a connection gets 503 at once: no thread, no waiting socket
    idle_timeout_s = 10.0  # a connection that sends no request, or cannot take a frame, for this long is closed

    def __init__(self, port: int, host: str = "127.0.0.1", quality: int = 80, max_fps: float = 15.0,
                 max_connections: Optional[int] = None, idle_timeout_s: Optional[float] = None):
        if not max_fps > 0:
            raise ValueError("max_fps must be > 0, got %r" % (max_fps,))
        self.max_connections = max_connections or self.max_connections
        self.idle_timeout_s = idle_timeout_s or self.idle_timeout_s
        self.quality = quality
        self.min_interval = 1.0 / max_fps
        self._jpeg: Optional[bytes] = None
        self._last: Optional[np.ndarray] = None  # the last frame, for /snapshot.jpg
        self._seq = 0
        self._clients = 0
        self._closed = False
        self._cond = threading.Condition()
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = server_self.idle_timeout_s  # on every read and write of the socket

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/":
                    body = b"<html><body><img src='/stream'></body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/stream":
                    server_self._stream(self)
                elif self.path == "/snapshot.jpg":
                    jpeg = server_self.snapshot()
                    if jpeg is None:
                        self.send_error(404, "no frame yet")
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(jpeg)))
                    self.end_headers()
                    self.wfile.write(jpeg)
                else:
                    self.send_error(404, "only /, /stream and /snapshot.jpg exist")

            def log_message(self, *args: Any) -> None:
                pass  # quiet: a stream request would log forever

        slots = threading.BoundedSemaphore(self.max_connections)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: Any, client_address: Any) -> None:
                if not slots.acquire(blocking=False):
                    try:  # refused in this (the accepting) thread: a flood holds no thread or socket
                        request.settimeout(1.0)
                        request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    except OSError:
                        pass
                    self.shutdown_request(request)
                    return
                super().process_request(request, client_address)

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

        self._server = Server((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg",
                                        daemon=True)
        self._thread.start()

    @property
    def watching(self) -> int:
        return self._clients

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return "http://%s:%d/" % (host.decode() if isinstance(host, bytes) else host, self.port)

    def _changed_since(self, seen: int) -> bool:
        return self._closed or self._seq != seen

    def wait_for_viewer(self, timeout: float) -> bool:
        """Block until a browser watches the stream (True) or `timeout` s pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._clients > 0 or self._closed, timeout=timeout) \
                and not self._closed

    def snapshot(self) -> Optional[bytes]:
        """The last published frame as a JPEG (None before the first): it stays after a replay ends."""
        with self._cond:
            frame = self._last
        return None if frame is None else self._encode(frame)

    def publish(self, frame: np.ndarray) -> None:
        with self._cond:
            self._last = frame.copy()
        if not self._clients:
            return
        jpeg = self._encode(frame)
        if jpeg is not None:
            with self._cond:
                self._jpeg = jpeg
                self._seq += 1
                self._cond.notify_all()

    def _encode(self, frame: np.ndarray) -> Optional[bytes]:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return data.tobytes() if ok else None

    def _stream(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=%s"
                            % self.boundary)
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        with self._cond:
            self._clients += 1
            self._cond.notify_all()
        seen = -1
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(functools.partial(self._changed_since, seen), timeout=1.0)
                    if self._closed:
                        return
                    if self._seq == seen or self._jpeg is None:
                        continue
                    seen, jpeg = self._seq, self._jpeg
                started = time.monotonic()
                handler.wfile.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d"
                                    b"\r\n\r\n" % (self.boundary.encode(), len(jpeg)))
                handler.wfile.write(jpeg + b"\r\n")
                handler.wfile.flush()
                # Pace this viewer: frames published meanwhile are skipped, not queued.
                pause = self.min_interval - (time.monotonic() - started)
                if pause > 0:
                    time.sleep(pause)
        except OSError:
            return  # the browser went away, or took no frame for idle_timeout_s (socket.timeout)
        finally:
            with self._cond:
                self._clients -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)


# Video codecs in order of preference, each with its container: H.264 in an MP4 plays in every browser
# but OpenCV's wheels usually lack its encoder; VP8 in a WebM plays in every browser too; MPEG-4
# part 2 in an MP4 plays in desktop players only.
VIDEO_CODECS = (("avc1", ".mp4"), ("VP80", ".webm"), ("mp4v", ".mp4"))


class HeadlessDisplay(Display):
    """No screen: every `save_every`-th frame to PNG, optionally all frames to a video, and
    optionally an MJPEG stream for a browser. `pace`: while someone watches the stream, show at
    most this many frames a second (a replay would otherwise be over in a blink)."""

    def __init__(self, out_dir: Optional[PathLike] = None, save_every: int = 0,
                 video: Optional[PathLike] = None, fps: float = 15.0,
                 mjpeg_port: Optional[int] = None, mjpeg_host: str = "127.0.0.1",
                 mjpeg_wait: float = 0.0, pace: Optional[float] = None):
        self.out_dir = pathlib.Path(out_dir) if out_dir else None
        if save_every and self.out_dir is None:
            raise ValueError("save_every needs an out_dir")
        if self.out_dir:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.save_every = save_every
        self.video_path = pathlib.Path(video) if video else None
        self.video_codec = ""
        self.fps = fps
        self.pace = pace
        self._shown_at = 0.0
        self._writer: Any = None
        self.count = 0
        self.saved: List[pathlib.Path] = []
        self.mjpeg = MjpegServer(mjpeg_port, mjpeg_host, max_fps=fps) if mjpeg_port is not None else None
        self._wait = mjpeg_wait  # before the first frame: a replay must not end before anyone watches

    def show(self, frame: np.ndarray) -> None:
        if self.mjpeg is not None and self._wait > 0:
            log.info("MJPEG stream on %s: waiting up to %.0f s for a viewer", self.mjpeg.url, self._wait)
            if not self.mjpeg.wait_for_viewer(self._wait):
                log.info("MJPEG: nobody is watching; going on")
            self._wait = 0.0
        if self.save_every and self.count % self.save_every == 0:
            path = self.out_dir / ("frame_%06d.png" % self.count)  # type: ignore[operator]
            cv2.imwrite(str(path), frame)
            self.saved.append(path)
        if self.video_path is not None:
            if self._writer is None:
                self._writer = self._open_video((frame.shape[1], frame.shape[0]))
            self._writer.write(frame)
        if self.mjpeg is not None:
            if self.pace and self.mjpeg.watching:
                time.sleep(max(0.0, self._shown_at + 1.0 / self.pace - time.monotonic()))
                self._shown_at = time.monotonic()
            self.mjpeg.publish(frame)
        self.count += 1

    def _open_video(self, size: Tuple[int, int]) -> Any:
        """The first of VIDEO_CODECS this OpenCV can write; video_path takes its container's suffix."""
        assert self.video_path is not None
        tried: List[str] = []
        for fourcc, suffix in VIDEO_CODECS:
            path = self.video_path.with_suffix(suffix)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps, size)
            if writer.isOpened():
                if path != self.video_path:
                    log.info("video: %s (%s; this OpenCV writes no %s)", path, fourcc, ", ".join(tried))
                self.video_path, self.video_codec = path, fourcc
                return writer
            writer.release()
            tried.append(fourcc)
        raise HardwareError("OpenCV can write none of the video codecs %s here" % ", ".join(tried))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.mjpeg is not None:
            self.mjpeg.close()
            self.mjpeg = None


class TeeDisplay(Display):
    """The same frames on several displays (e.g. HDMI and an MJPEG stream)."""

    def __init__(self, displays: List[Display]):
        self.displays = displays

    def show(self, frame: np.ndarray) -> None:
        for display in self.displays:
            display.show(frame)

    def close(self) -> None:
        for display in self.displays:
            display.close()
