from synthdet.cli import main

main()
