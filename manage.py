#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys
from pathlib import Path

#: platform/ holds the config and messaging packages; it is a folder on the
#: path, not a package, so that it never shadows the standard library's platform.
PLATFORM_DIR = Path(__file__).resolve().parent / "platform"


def main():
    sys.path.insert(0, str(PLATFORM_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
