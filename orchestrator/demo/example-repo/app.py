"""A tiny application the demo's agents extend."""


def main() -> None:
    print("hello from the example app")


if __name__ == "__main__":
    main()
