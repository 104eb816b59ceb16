from __future__ import annotations

from resolver.cli.app import main

main()
