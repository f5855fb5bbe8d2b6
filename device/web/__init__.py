"""The commissioning page (index.html), package data served by device/daemon/web.py."""
