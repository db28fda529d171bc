"""``python -m advbench`` runs the console script."""

from advbench.cli import main

if __name__ == "__main__":
    main()
