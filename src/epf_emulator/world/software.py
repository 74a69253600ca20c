"""The software the emulated fleet runs: products, their versions, install rates and end of support.

Owns the catalogue behind the TVM software inventory and vulnerabilities (defender-apis.md
B.5.2, B.5.6): vendor and product names in TVM's lower-case CPE style, versions oldest first
with how common each is, how likely each device kind (Windows client or server, macOS,
Linux) has the product, end-of-support facts, evidence paths, and how many CVEs a product
accumulates (``cve_weight``; the CVE catalogue scales them to the configured rows per device).
Operating systems are products too; a device's OS product and version come from the device.
Pure data and small helpers; no randomness here.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "PRODUCTS", "Product", "os_product"]

KINDS = ("client", "server", "macOS", "Linux")


@dataclass(frozen=True)
class Product:
    """One software product; ``install`` maps a device kind to the share that has it."""

    vendor: str
    name: str
    versions: tuple[str, ...]  # oldest first
    install: tuple[tuple[str, float], ...]
    cve_weight: float
    category: str = "Application"
    # (status, ISO date or None) per product; versions before ``eos_before`` are "EOS Version".
    eos_status: str = "None"
    eos_date: str | None = None
    eos_before: int = 0
    disk_path: str | None = None
    registry_path: str | None = None
    no_fix_share: float = 0.04  # CVEs with no security update yet ("NoSecurityUpdate")

    @property
    def recommendation_id(self) -> str:
        return f"va-_-{self.vendor}-_-{self.name}"

    def version_weights(self) -> tuple[float, ...]:
        """Newer versions are more common; the oldest linger on a few devices."""
        raw = [1.0 + 1.6 * i * i for i in range(len(self.versions))]
        total = sum(raw)
        return tuple(w / total for w in raw)


# Evidence paths: %W% and %W86% are the Program Files folders, %U% and %U86% the Uninstall keys.
_PATHS = {
    "%W86%": "C:\\Program Files (x86)",
    "%W%": "C:\\Program Files",
    "%U86%": "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
    "%U%": "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
}
# vendor | name | versions, oldest first | install share per kind | CVE weight | category |
# end-of-support status | its date | versions before this index are "EOS Version" | disk | registry.
# Operating systems first: their version comes from the device (Windows: the build revision).
_TABLE = r"""
microsoft | windows_10 | 4529 4894 5011 5131 5247 | - | 10 | OS | EOS Software | 2025-10-14 | 0 | - | -
microsoft | windows_11 | 4529 4894 5011 5131 5247 | - | 9 | OS | None | - | 0 | - | -
microsoft | windows_server_2016 | 4529 4894 5011 5131 5247 | - | 9 | OS | Upcoming EOS Software | 2027-01-12 | 0 | - | -
microsoft | windows_server_2019 | 4529 4894 5011 5131 5247 | - | 9 | OS | None | - | 0 | - | -
microsoft | windows_server_2022 | 4529 4894 5011 5131 5247 | - | 8 | OS | None | - | 0 | - | -
apple | macos | 13.7 14.6 14.7 15.1 | - | 6 | OS | None | 2025-09-15 | 1 | - | -
canonical | ubuntu_linux | 22.04 24.04 | - | 4 | OS | None | - | 0 | - | -
redhat | enterprise_linux | 9.4 | - | 4 | OS | None | - | 0 | - | -
debian | debian_linux | 12 | - | 3 | OS | None | - | 0 | - | -
microsoft | edge_chromium | 126.0.2592.113 127.0.2651.105 128.0.2739.79 129.0.2792.89 130.0.2849.68 | client=0.99 server=0.9 macOS=0.35 | 3 | Application | None | - | 0 | %W86%\Microsoft\Edge\Application\msedge.exe | %U86%\Microsoft Edge
google | chrome | 126.0.6478.127 127.0.6533.120 128.0.6613.138 129.0.6668.101 130.0.6723.92 | client=0.72 server=0.15 macOS=0.8 Linux=0.05 | 3.5 | Application | None | - | 0 | %W%\Google\Chrome\Application\chrome.exe | %U%\Google Chrome
mozilla | firefox | 127.0.2 128.0.3 129.0.2 130.0.1 131.0.3 | client=0.25 macOS=0.2 Linux=0.1 | 2.5 | Application | None | - | 0 | %W%\Mozilla Firefox\firefox.exe | %U%\Mozilla Firefox
microsoft | office | 16.0.17328.20282 16.0.17531.20152 16.0.17726.20160 16.0.17928.20156 | client=0.88 macOS=0.6 | 2 | Application | None | - | 0 | %W%\Microsoft Office\root\Office16\WINWORD.EXE | %U%\O365ProPlusRetail - en-us
microsoft | teams | 24124.2311.2911.3341 24165.1410.2974.6689 24215.1007.3082.1590 | client=0.82 macOS=0.7 | 0.6 | Application | None | - | 0 | - | -
microsoft | onedrive | 24.086.0428.0003 24.131.0701.0004 24.181.0908.0001 | client=0.86 macOS=0.5 | 0.4 | Application | None | - | 0 | - | HKEY_USERS\S-1-5-21-1004336348-1177238915-682003330-1001\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\OneDriveSetup.exe
adobe | acrobat_reader_dc | 23.008.20470 24.001.20643 24.002.20759 24.003.20112 | client=0.55 server=0.05 macOS=0.3 | 2 | Application | None | - | 0 | %W%\Adobe\Acrobat DC\Acrobat\Acrobat.exe | %U%\{AC76BA86-1033-FFFF-7760-BC15014EA700}
7-zip | 7-zip | 19.0.0.0 22.1.0.0 23.1.0.0 24.8.0.0 | client=0.3 server=0.25 | 0.6 | Application | None | 2022-07-15 | 1 | %W%\7-Zip\7z.exe | %U%\7-Zip
notepad-plus-plus | notepad++ | 8.5.8 8.6.2 8.6.9 | client=0.2 server=0.3 | 0.5 | Application | None | - | 0 | %W%\Notepad++\notepad++.exe | -
oracle | jre | 8.0.381 8.0.401 8.0.411 8.0.421 | client=0.18 server=0.2 | 2 | Application | Upcoming EOS Software | 2030-12-31 | 0 | %W%\Java\jre-1.8\bin\java.exe | -
zoom | zoom | 5.17.11 6.0.11 6.1.6 6.2.5 | client=0.35 macOS=0.5 | 1 | Application | None | 2024-11-01 | 1 | - | -
videolan | vlc_media_player | 3.0.18 3.0.20 3.0.21 | client=0.22 macOS=0.2 Linux=0.05 | 0.7 | Application | None | - | 0 | - | -
python | python | 3.9.13 3.11.9 3.12.5 | client=0.1 server=0.12 macOS=0.25 Linux=0.85 | 0.8 | Application | None | 2025-10-31 | 1 | - | -
git-scm | git | 2.44.0 2.45.2 2.46.2 | client=0.1 macOS=0.35 Linux=0.3 | 0.4 | Application | None | - | 0 | - | -
microsoft | .net_framework | 4.7.2.0 4.8.0.0 4.8.1.0 | client=0.95 server=0.97 | 1.2 | Application | None | - | 0 | - | SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full
microsoft | visual_c++_2015-2022_redistributable | 14.38.33135.0 14.40.33810.0 14.42.34433.0 | client=0.9 server=0.9 | 0.3 | Application | None | - | 0 | - | -
microsoft | powershell | 7.2.19 7.4.4 7.4.6 | client=0.25 server=0.55 macOS=0.05 Linux=0.08 | 0.5 | Application | None | 2024-11-08 | 1 | - | -
microsoft | visual_studio_code | 1.90.2 1.92.2 1.94.2 | client=0.3 macOS=0.45 Linux=0.05 | 0.4 | Application | None | - | 0 | - | -
cisco | secure_client | 5.0.05040 5.1.2.42 5.1.4.74 | client=0.4 macOS=0.4 | 1 | Application | None | - | 0 | - | -
citrix | workspace | 2309.1.0.20 2402.1.0.10 2409.0.0.2 | client=0.12 | 0.8 | Application | None | - | 0 | - | -
rarlab | winrar | 6.24.0 7.0.0 7.1.0 | client=0.12 | 0.6 | Application | None | - | 0 | - | -
putty | putty | 0.79 0.80 0.81 | client=0.08 server=0.2 | 0.4 | Application | None | - | 0 | - | -
microsoft | sql_server_2019 | 15.0.4345.5 15.0.4375.4 15.0.4390.2 | server=0.22 | 1.5 | Application | None | - | 0 | - | -
microsoft | internet_information_services | 10.0.17763.1 10.0.20348.1 | server=0.3 | 0.8 | Application | None | - | 0 | - | -
apache | tomcat | 9.0.85 9.0.91 10.1.28 | server=0.08 Linux=0.12 | 1.2 | Application | None | - | 0 | - | -
openssl | openssl | 3.0.2 3.0.13 3.0.14 3.0.15 | server=0.3 macOS=0.3 Linux=1 | 2 | Application | None | - | 0 | - | -
apple | safari | 17.5 17.6 18.0 18.1 | macOS=1 | 2 | Application | None | - | 0 | - | -
slack | slack | 4.38.125 4.39.95 4.40.128 | client=0.2 macOS=0.4 | 0.3 | Application | None | - | 0 | - | -
docker | docker_desktop | 4.30.0 4.33.1 4.35.1 | client=0.05 macOS=0.15 | 0.6 | Application | None | - | 0 | - | -
linux | linux_kernel | 5.15.0.119 6.5.0.45 6.8.0.47 | Linux=1 | 5 | Application | None | - | 0 | - | -
openbsd | openssh | 8.9p1 9.6p1 9.7p1 9.9p1 | macOS=0.2 Linux=0.95 | 1 | Application | None | - | 0 | - | -
gnu | bash | 5.1.16 5.2.21 5.2.32 | Linux=1 macOS=0.3 | 0.3 | Application | None | - | 0 | - | -
gnu | glibc | 2.35 2.38 2.39 | Linux=1 | 1.5 | Application | None | - | 0 | - | -
sudo_project | sudo | 1.9.9 1.9.15 1.9.16 | Linux=1 | 0.6 | Application | None | - | 0 | - | -
haxx | curl | 7.81.0 8.5.0 8.9.1 8.10.1 | macOS=0.5 Linux=0.9 | 1.5 | Application | None | - | 0 | - | -
vim | vim | 8.2.3995 9.0.2167 9.1.0697 | macOS=0.6 Linux=0.7 | 1 | Application | None | - | 0 | - | -
f5 | nginx | 1.18.0 1.24.0 1.26.2 | Linux=0.2 | 0.8 | Application | None | - | 0 | - | -
apache | http_server | 2.4.52 2.4.58 2.4.62 | Linux=0.15 | 1.2 | Application | None | - | 0 | - | -
oracle | openjdk | 11.0.24 17.0.12 21.0.4 | Linux=0.2 server=0.05 | 1 | Application | None | - | 0 | - | -
docker | docker | 24.0.7 26.1.4 27.3.1 | Linux=0.3 | 0.8 | Application | None | - | 0 | - | -
"""


def _parse(table: str) -> tuple[Product, ...]:
    products = []
    for line in table.strip().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        vendor, name, versions, install, weight, category, status, date, before = cells[:9]
        disk, registry = (_expand(cell) for cell in cells[9:11])
        shares = tuple(
            (kind, float(share))
            for kind, _, share in (item.partition("=") for item in install.split() if item != "-")
        )
        products.append(
            Product(
                vendor,
                name,
                tuple(versions.split()),
                shares,
                float(weight),
                category,
                status,
                None if date == "-" else date,
                int(before),
                disk,
                registry,
            )
        )
    return tuple(products)


def _expand(cell: str) -> str | None:
    if cell == "-":
        return None
    for short, full in _PATHS.items():
        if cell.startswith(short):
            return full + cell[len(short) :]
    return cell


#: Operating systems first (their version comes from the device), then applications.
PRODUCTS: tuple[Product, ...] = _parse(_TABLE)

#: osPlatform (or Linux distribution) -> the OS product's name.
_OS_PRODUCTS = {
    "Windows10": "windows_10",
    "Windows11": "windows_11",
    "WindowsServer2016": "windows_server_2016",
    "WindowsServer2019": "windows_server_2019",
    "WindowsServer2022": "windows_server_2022",
    "macOS": "macos",
    "Ubuntu": "ubuntu_linux",
    "RedHatEnterpriseLinux": "enterprise_linux",
    "Debian": "debian_linux",
}
_INDEX = {p.name: i for i, p in enumerate(PRODUCTS)}


def os_product(platform: str, distribution: str, version: str) -> tuple[int, int]:
    """(product index, version index) of a device's operating system.

    ``version`` is the Windows revision, or the macOS / Linux release.
    """
    key = distribution if platform == "Linux" else platform
    index = _INDEX[_OS_PRODUCTS[key]]
    versions = PRODUCTS[index].versions
    return index, versions.index(version) if version in versions else len(versions) - 1
