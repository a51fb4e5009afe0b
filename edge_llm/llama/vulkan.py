"""What the Vulkan loader says about each physical device: driver version and the largest buffer
a shader may address. ggml does not expose either, and both matter:

- the self-check's verdict is kept per driver version (edge_llm.devices.selfcheck);
- llama.cpp's Vulkan backend refuses a weight larger than ``maxStorageBufferRange`` and keeps it
  in host memory (128 MiB on lavapipe and many phone GPUs: Gemma 3's tied output head, 170 MiB,
  stays on the CPU), which `plan` must know to predict device memory.

One Vulkan instance, two queries, the instance destroyed: core Vulkan 1.0 calls through ctypes
on ``libvulkan.so.1``; nothing is returned (an empty list) when there is no loader or no device.
The structures are Vulkan 1.0's, whose layout the specification fixes.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO = 1
DEVICE_TYPES = {0: "other", 1: "igpu", 2: "gpu", 3: "virtual", 4: "cpu"}


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [
        ("sType", ctypes.c_uint32),
        ("pNext", ctypes.c_void_p),
        ("flags", ctypes.c_uint32),
        ("pApplicationInfo", ctypes.c_void_p),
        ("enabledLayerCount", ctypes.c_uint32),
        ("ppEnabledLayerNames", ctypes.c_void_p),
        ("enabledExtensionCount", ctypes.c_uint32),
        ("ppEnabledExtensionNames", ctypes.c_void_p),
    ]


class _LimitsHead(ctypes.Structure):
    """The first fields of VkPhysicalDeviceLimits (the rest is not read)."""

    _fields_ = [
        ("maxImageDimension1D", ctypes.c_uint32),
        ("maxImageDimension2D", ctypes.c_uint32),
        ("maxImageDimension3D", ctypes.c_uint32),
        ("maxImageDimensionCube", ctypes.c_uint32),
        ("maxImageArrayLayers", ctypes.c_uint32),
        ("maxTexelBufferElements", ctypes.c_uint32),
        ("maxUniformBufferRange", ctypes.c_uint32),
        ("maxStorageBufferRange", ctypes.c_uint32),
    ]


class _Properties(ctypes.Structure):
    """VkPhysicalDeviceProperties: the limits start 8-aligned (they hold 64-bit sizes); the
    sparse properties after them are left to the padding."""

    _fields_ = [
        ("apiVersion", ctypes.c_uint32),
        ("driverVersion", ctypes.c_uint32),
        ("vendorID", ctypes.c_uint32),
        ("deviceID", ctypes.c_uint32),
        ("deviceType", ctypes.c_uint32),
        ("deviceName", ctypes.c_char * 256),
        ("pipelineCacheUUID", ctypes.c_uint8 * 16),
        ("_align", ctypes.c_uint32),
        ("limits", _LimitsHead),
        ("_rest", ctypes.c_uint8 * 4096),  # more than the rest of the structure needs
    ]


@dataclass(frozen=True)
class VulkanDevice:
    name: str  # deviceName: ggml's description of the device
    type: str
    vendor_id: int
    device_id: int
    api_version: str
    driver_version: int  # vendor-encoded; compared, never decoded
    max_storage_buffer_range: int  # bytes one buffer binding may span


def _version(v: int) -> str:
    return f"{(v >> 22) & 0x7F}.{(v >> 12) & 0x3FF}.{v & 0xFFF}"


@functools.cache
def physical_devices() -> tuple[VulkanDevice, ...]:
    """Every physical device the Vulkan loader enumerates (CPU-type ones included)."""
    try:
        vk = ctypes.CDLL("libvulkan.so.1")
    except OSError:
        return ()
    vk.vkCreateInstance.restype = ctypes.c_int32
    vk.vkCreateInstance.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    vk.vkEnumeratePhysicalDevices.restype = ctypes.c_int32
    vk.vkEnumeratePhysicalDevices.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    vk.vkGetPhysicalDeviceProperties.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    vk.vkDestroyInstance.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    info = _InstanceCreateInfo(sType=VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO)
    instance = ctypes.c_void_p()
    if vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance)) != 0:
        return ()
    try:
        count = ctypes.c_uint32(0)
        if vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None) != 0:
            return ()
        handles = (ctypes.c_void_p * count.value)()
        if vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles) not in (0, 5):
            return ()
        out = []
        for h in handles[: count.value]:
            p = _Properties()
            vk.vkGetPhysicalDeviceProperties(h, ctypes.byref(p))
            out.append(
                VulkanDevice(
                    name=p.deviceName.decode(errors="replace"),
                    type=DEVICE_TYPES.get(p.deviceType, str(p.deviceType)),
                    vendor_id=p.vendorID,
                    device_id=p.deviceID,
                    api_version=_version(p.apiVersion),
                    driver_version=p.driverVersion,
                    max_storage_buffer_range=p.limits.maxStorageBufferRange,
                )
            )
        return tuple(out)
    finally:
        vk.vkDestroyInstance(instance, None)


def describe(name: str) -> VulkanDevice | None:
    """The physical device ggml describes as ``name`` (its deviceName), if the loader lists it."""
    return next((d for d in physical_devices() if d.name == name), None)
